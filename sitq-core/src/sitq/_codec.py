"""Encoding task calls into job payloads and results into stored bytes (and back)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from .errors import PayloadTooLarge, SerializationError, TaskNotFound
from .result import RESULT_FIELDS, Result, result_fields, result_from_fields
from .serializers import Serializer, Signer

MiB = 1024 * 1024


def _human(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size / 1024:.1f} KiB"


def task_name(func: Callable[..., Any]) -> str:
    """``module:qualname`` of a callable (``<lambda>`` and ``<locals>`` included)."""
    inner = getattr(func, "__sitq_func__", func)
    module = getattr(inner, "__module__", None) or "?"
    qualname = getattr(inner, "__qualname__", None) or type(inner).__qualname__
    return f"{module}:{qualname}"


@functools.lru_cache(maxsize=1024)
def _importable(func: Callable[..., Any]) -> bool:
    name = task_name(func)
    module, _, qualname = name.partition(":")
    if module == "__main__" or "<" in qualname:
        return False
    try:
        target = resolve_task(name)
    except TaskNotFound:
        return False
    return target is getattr(func, "__sitq_func__", func)


def resolve_task(name: str) -> Callable[..., Any]:
    """Import ``module:qualname`` and return the function (unwrapping ``@queue.task``)."""
    module_name, sep, qualname = name.partition(":")
    if not sep or not module_name or not qualname:
        raise TaskNotFound(
            f"task reference {name!r} is not of the form 'module:function' "
            "(e.g. 'myapp.tasks:send_email')"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, but also whatever the module raises on import
        raise TaskNotFound(
            f"cannot import module {module_name!r} for task {name!r}: "
            f"{type(exc).__name__}: {exc}. Make sure the worker runs with the same code as "
            "the producer (same PYTHONPATH, or pass --app) and that the module imports cleanly"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except Exception:
            raise TaskNotFound(
                f"module {module_name!r} has no attribute {qualname!r} (task {name!r}); "
                "was the function renamed or is the worker running older code?"
            ) from None
    obj = getattr(obj, "__sitq_func__", obj)
    if not callable(obj):
        raise TaskNotFound(f"task {name!r} refers to a {type(obj).__name__}, not a callable")
    func: Callable[..., Any] = obj
    return func


@functools.lru_cache(maxsize=4096)
def _resolve_cached(name: str) -> Callable[..., Any]:
    """:func:`resolve_task` for workers: a name resolves once per process (failures are
    not cached, so a task that is not importable yet is looked up again next time)."""
    return resolve_task(name)


def call_encoder(
    func: Callable[..., Any], serializer: Serializer, signer: Signer, max_payload: int
) -> tuple[str, Callable[[tuple[Any, ...] | list[Any], Mapping[str, Any]], bytes]]:
    """The task name of ``func`` and a function encoding one call of it to a payload.

    Deciding how ``func`` travels (a module-level function by reference, others by
    value) happens once here, so ``enqueue_many`` pays for it once, not per item.
    """
    name = task_name(func)
    target: Any
    try:
        by_reference = _importable(func)
    except TypeError:  # unhashable callable object
        by_reference = False
    if by_reference:
        target = name
    elif serializer.supports_callables:
        target = getattr(func, "__sitq_func__", func)
    else:
        raise SerializationError(
            f"task {name} cannot be sent with the {serializer.name!r} serializer: it is not "
            "importable by a worker (a lambda, a closure or a function in __main__). Define "
            "it at module level in an importable module, or use serializer='cloudpickle'"
        )
    dumps, sign = serializer.dumps, signer.sign

    def encode(args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any]) -> bytes:
        try:
            body = dumps([target, list(args), dict(kwargs)])
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize the arguments of {name} with {serializer.name!r}: "
                f"{type(exc).__name__}: {exc}. Pass plain data (ids, paths, numbers, strings) "
                "or choose a serializer that supports these types"
            ) from exc
        payload = sign(body)
        if len(payload) > max_payload:
            raise PayloadTooLarge(
                f"the payload of {name} is {_human(len(payload))}, over max_payload "
                f"({_human(max_payload)}). Store large data elsewhere and pass a reference "
                "(a path, URL or database id), or raise max_payload / SITQ_MAX_PAYLOAD"
            )
        return payload

    return name, encode


def encode_call(
    func: Callable[..., Any],
    args: tuple[Any, ...] | list[Any],
    kwargs: Mapping[str, Any],
    serializer: Serializer,
    signer: Signer,
    max_payload: int,
) -> tuple[str, bytes]:
    """Serialize a call; a module-level function travels by reference, others by value."""
    name, encode = call_encoder(func, serializer, signer, max_payload)
    return name, encode(args, kwargs)


def decode_call(
    payload: bytes, serializer: Serializer, signer: Signer, task: str
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """Verify, deserialize and resolve a job's payload. Raises a SitqError subclass."""
    body = signer.verify(payload, "payload")
    try:
        data = serializer.loads(body)
    except Exception as exc:
        raise SerializationError(
            f"the payload of {task} could not be deserialized by {serializer.name!r}: "
            f"{type(exc).__name__}: {exc}. The payload is malformed or truncated, or was "
            "written by a different serializer"
        ) from exc
    if not (isinstance(data, list | tuple) and len(data) == 3):
        raise SerializationError(
            f"the payload of {task} is not a sitq call (expected [task, args, kwargs], got "
            f"{type(data).__name__}); it was not written by sitq"
        )
    target, args, kwargs = data
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise SerializationError(f"the payload of {task} has malformed args/kwargs")
    func = _resolve_cached(target) if isinstance(target, str) else target
    if not callable(func):
        raise SerializationError(f"the payload of {task} holds a {type(func).__name__}, "
                                 "not a callable")
    return func, tuple(args), kwargs


def encode_result(result: Result[Any], serializer: Serializer, signer: Signer) -> bytes:
    """Stored form of a result: msgpack metadata + the value serialized, then signed."""
    return encode_result_meta(result_fields(result), result.value, serializer, signer)


def encode_result_meta(
    meta: list[Any], value: Any, serializer: Serializer, signer: Signer
) -> bytes:
    """:func:`encode_result` from :func:`~sitq.result.result_meta` (the worker's path).

    A ``None`` value is stored as no value at all (it reads back as ``None``)."""
    meta.append(serializer.name)
    meta.append(None if value is None or meta[1] != "success" else serializer.dumps(value))
    packed: bytes = msgpack.packb(meta, use_bin_type=True)
    return signer.sign(packed)


def decode_result(
    data: bytes, serializer_for: Callable[[str], Serializer], signer: Signer
) -> Result[Any]:
    body = signer.verify(data, "result")
    try:
        record = msgpack.unpackb(body, raw=False)
        if not isinstance(record, list) or len(record) != len(RESULT_FIELDS) + 2:
            raise ValueError("not a sitq result record")
        meta = dict(zip(RESULT_FIELDS, record, strict=False))
        name, value_bytes = record[-2], record[-1]
        value = None
        if value_bytes is not None:
            value = serializer_for(name).loads(value_bytes)
        return result_from_fields(meta, value)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(
            f"a stored result could not be decoded ({type(exc).__name__}: {exc}); the record "
            "is corrupt or was not written by sitq"
        ) from exc
