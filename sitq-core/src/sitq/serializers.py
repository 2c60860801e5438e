"""Serializers (chosen by name) and HMAC signing of payloads and results.

Security: ``cloudpickle`` (the default) and ``pickle`` run code while loading. Anyone who
can write to the store can make a worker execute arbitrary code. Configure a secret key
(``SITQ_SECRET_KEY``) so every payload and result is HMAC-signed and a worker refuses
unsigned or wrongly signed data *before* deserializing it, or use ``json``/``msgpack``.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

from .errors import ConfigurationError, SerializationError, SignatureError

__all__ = [
    "CloudpickleSerializer",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "Signer",
]


@runtime_checkable
class Serializer(Protocol):
    """Turns Python objects into bytes and back.

    ``name`` is what jobs record (a worker picks the serializer by it).
    ``supports_callables`` says whether a function object (a lambda, a closure) can be
    sent by value; when it is ``False`` only module-level functions can be enqueued.
    """

    @property
    def name(self) -> str: ...

    @property
    def supports_callables(self) -> bool: ...

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """Standard-library pickle (highest protocol). Executes code on load: sign payloads.

    The standard library pickles functions by reference, so only module-level functions
    can be enqueued with it (``supports_callables = False``).
    """

    name: ClassVar[str] = "pickle"
    supports_callables: ClassVar[bool] = False

    def dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


class CloudpickleSerializer(PickleSerializer):
    """cloudpickle: sends lambdas and closures by value. Executes code on load: sign payloads.

    Speed: plain ``pickle.dumps`` is tried first (several times faster than cloudpickle's
    Pickler). Its output is used only when it succeeds, mentions no ``__main__`` object
    and no module is registered with ``cloudpickle.register_pickle_by_value``; then it is
    exactly what cloudpickle would write by reference. Anything else (a lambda, a
    closure, a ``__main__`` function) goes through cloudpickle, by value.
    """

    name: ClassVar[str] = "cloudpickle"
    supports_callables: ClassVar[bool] = True

    def __init__(self) -> None:
        import cloudpickle

        self._dumps = cloudpickle.dumps
        self._by_value = getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", None)

    def dumps(self, obj: Any) -> bytes:
        if self._by_value is not None and not self._by_value:
            try:
                fast = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                pass
            else:
                # One search for what both names end with; the exact ones only on a hit.
                if fast.find(b"main__") < 0 or (
                    b"__main__" not in fast and b"__mp_main__" not in fast
                ):
                    return fast
        data: bytes = self._dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        return data


class JsonSerializer:
    """JSON through orjson: safe to load; only JSON types (tuples arrive as lists)."""

    name: ClassVar[str] = "json"
    supports_callables: ClassVar[bool] = False

    def __init__(self) -> None:
        import orjson

        self._orjson = orjson

    def dumps(self, obj: Any) -> bytes:
        return self._orjson.dumps(obj, option=self._orjson.OPT_SERIALIZE_NUMPY)

    def loads(self, data: bytes) -> Any:
        return self._orjson.loads(data)


class MsgpackSerializer:
    """msgpack: safe to load, compact; bytes survive, tuples arrive as lists."""

    name: ClassVar[str] = "msgpack"
    supports_callables: ClassVar[bool] = False

    def __init__(self) -> None:
        import msgpack

        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb

    def dumps(self, obj: Any) -> bytes:
        data: bytes = self._packb(obj, use_bin_type=True, datetime=True)
        return data

    def loads(self, data: bytes) -> Any:
        return self._unpackb(data, raw=False, strict_map_key=False, timestamp=3)


# --------------------------------------------------------------------------- signing

_MAGIC = b"\xffSQ1"
_MAC_LEN = 32


class Signer:
    """HMAC-SHA256 signing with key rotation: the first key signs, every key verifies.

    With no keys, :meth:`sign` returns the data unchanged and :meth:`verify` refuses signed
    data (a worker without the key cannot check it).
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str | bytes] | str | bytes | None = None) -> None:
        if keys is None:
            keys = []
        elif isinstance(keys, str | bytes):
            keys = [k for k in (keys.split(",") if isinstance(keys, str) else [keys]) if k]
        self._keys: list[bytes] = []
        for key in keys:
            raw = key.encode() if isinstance(key, str) else key
            if not isinstance(raw, bytes) or len(raw.strip()) == 0:
                raise ConfigurationError("secret_key entries must be non-empty strings")
            self._keys.append(raw.strip())

    def sign(self, data: bytes) -> bytes:
        if not self._keys:
            return data
        mac = hmac.new(self._keys[0], data, hashlib.sha256).digest()
        return _MAGIC + mac + data

    def verify(self, data: bytes, what: str = "payload") -> bytes:
        """Return the signed body of ``data``; raise :class:`SignatureError` if it cannot
        be trusted. Nothing is deserialized before this check passes."""
        if type(data) is bytes and not self._keys and not data.startswith(_MAGIC):
            return data  # the common unsigned case, without the checks below
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SerializationError(f"{what} must be bytes, got {type(data).__name__}")
        data = bytes(data)
        signed = data[: len(_MAGIC)] == _MAGIC
        # Who wrote the data: a producer writes payloads, a worker writes results.
        writer = "worker that stored it" if what == "result" else "producer"
        if not self._keys:
            if signed:
                raise SignatureError(
                    f"the {what} is signed but no secret key is configured here; set "
                    f"SITQ_SECRET_KEY (or secret_key=) to the key the {writer} uses"
                )
            return data
        if not signed:
            raise SignatureError(
                f"refused an unsigned {what}: a secret key is configured, so every {what} "
                f"must be signed with it; configure the {writer} with the same "
                "SITQ_SECRET_KEY"
            )
        if len(data) < len(_MAGIC) + _MAC_LEN:
            raise SignatureError(f"refused a truncated signed {what} ({len(data)} bytes)")
        mac = data[len(_MAGIC) : len(_MAGIC) + _MAC_LEN]
        body = data[len(_MAGIC) + _MAC_LEN :]
        for key in self._keys:
            if hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
                return body
        raise SignatureError(
            f"refused a {what} with a wrong signature: it was signed with a key that is not "
            "in this process's SITQ_SECRET_KEY list (add the old key after the new one to "
            "rotate keys), or it was tampered with"
        )


def check_accept(name: str, accept: Sequence[str] | None) -> None:
    if accept is not None and name not in accept:
        raise SerializationError(
            f"serializer {name!r} is not accepted by this worker (accept={list(accept)}); "
            f"add {name!r} to the worker's accept list or enqueue with an accepted serializer"
        )
