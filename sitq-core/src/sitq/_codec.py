"""Every wire format sitq writes, and only here: what producers, workers and clients of
different versions must agree on.

=================  =========================================  ===========================
format             shape (``v`` is the format's version)       written by
=================  =========================================  ===========================
call envelope      ``[v, target, args, kwargs]`` through the   producers (``Job.payload``)
                   job's serializer, then signed
result envelope    msgpack ``[v, id, status, error, traceback,  workers; the client for a
                   attempts, task, queue, enqueued_at,          cancelled job
                   started_at, finished_at, worker,
                   serializer, value]``, then signed
continuation       msgpack ``{"v", "steps", "prev",            producers (``Chain``) and
                   "failed"}`` (``Job.chain``)                 workers (the next step)
chain value        the step's value through the job's          workers
                   serializer, then signed (``prev`` above)
=================  =========================================  ===========================

``target`` is a task reference (``module:qualname``) or, for a serializer that supports
it, the callable itself. Times are epoch seconds; ``error`` is ``[type, message,
module]``; ``value`` is ``None`` for no value. A reader accepts its own version, older
ones and the unversioned records of sitq 0.1 (version 0, the same fields without ``v``);
a newer version is refused with an error that says to upgrade. A format that changes
bumps its version here, and readers learn the new version before writers write it.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgpack

from .errors import ConfigurationError, PayloadTooLarge, SerializationError, TaskNotFound
from .job import Job
from .result import ErrorInfo, Result
from .serializers import Serializer, Signer

if TYPE_CHECKING:
    from .result import Status

#: The version of each format this sitq writes.
CALL_VERSION = 1
RESULT_VERSION = 1
CONTINUATION_VERSION = 1

MiB = 1024 * 1024


def _human(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size / 1024:.1f} KiB"


def _version(what: str, version: Any, known: int) -> int:
    """The version of a versioned record, refusing one newer than ``known``."""
    if type(version) is not int or version < 1:
        raise SerializationError(f"the {what} has a malformed format version {version!r}")
    if version > known:
        raise SerializationError(
            f"the {what} was written in format version {version} by a newer sitq; this "
            f"one reads up to version {known}: upgrade sitq here"
        )
    return version


# ---------------------------------------------------------------------------- calls
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
            body = dumps([CALL_VERSION, target, list(args), dict(kwargs)])
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
    if isinstance(data, list | tuple) and data and type(data[0]) is int:
        _version(f"payload of {task}", data[0], CALL_VERSION)
        data = data[1:]
    if not (isinstance(data, list | tuple) and len(data) == 3):
        raise SerializationError(
            f"the payload of {task} is not a sitq call (expected [version, task, args, "
            f"kwargs], got {type(data).__name__}); it was not written by sitq"
        )
    target, args, kwargs = data
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise SerializationError(f"the payload of {task} has malformed args/kwargs")
    func = _resolve_cached(target) if isinstance(target, str) else target
    if not callable(func):
        raise SerializationError(f"the payload of {task} holds a {type(func).__name__}, "
                                 "not a callable")
    return func, tuple(args), kwargs


# ---------------------------------------------------------------------------- results
def _pack_result(
    fields: list[Any], value: Any, serializer: Serializer, signer: Signer
) -> bytes:
    """Sign ``[RESULT_VERSION, *fields, serializer, value]`` (``fields``: id to worker).
    A ``None`` value, or any value of a job that did not succeed, is stored as none."""
    dumped = None if value is None or fields[1] != "success" else serializer.dumps(value)
    packed: bytes = msgpack.packb([RESULT_VERSION, *fields, serializer.name, dumped],
                                  use_bin_type=True)
    return signer.sign(packed)


def _error(error: ErrorInfo | None) -> list[str] | None:
    return None if error is None else [error.type, error.message, error.module]


def encode_attempt(
    job: Job, status: Status, value: Any, error: ErrorInfo | None, traceback: str | None,
    started: float, worker: str, serializer: Serializer, signer: Signer,
) -> bytes:
    """The result of one attempt of ``job``, finished now (the worker's path: no
    :class:`Result` in between)."""
    return _pack_result(
        [job.id, status, _error(error), traceback, job.attempt, job.task, job.queue,
         job.created_at.timestamp(), started, time.time(), worker],
        value, serializer, signer,
    )


def encode_cancelled(
    job_id: str, job: Job | None, serializer: Serializer, signer: Signer
) -> bytes:
    """The result a job cancelled before it ran gets (``job``: its record, if found)."""
    error = ErrorInfo("Cancelled", "the job was cancelled before it ran", "sitq.errors")
    fields: list[Any]
    if job is None:
        fields = [job_id, "failed", _error(error), None, 0, None, None, None, None]
    else:
        fields = [job_id, "failed", _error(error), None, job.attempt, job.task, job.queue,
                  job.created_at.timestamp(), None]
    return _pack_result([*fields, time.time(), None], None, serializer, signer)


_STATUSES = ("pending", "success", "failed")


def decode_result(
    data: bytes, serializer_for: Callable[[str], Serializer], signer: Signer
) -> Result[Any]:
    """Verify and decode a stored result; a SerializationError for anything that is not a
    well-formed result (a corrupt record never becomes a :class:`Result`)."""
    body = signer.verify(data, "result")
    try:
        record = msgpack.unpackb(body, raw=False)
        if isinstance(record, list) and record and type(record[0]) is int:
            _version("stored result", record[0], RESULT_VERSION)
            record = record[1:]
        if not isinstance(record, list) or len(record) != 13:
            raise ValueError("not a sitq result record")
        (job_id, status, err, traceback, attempts, task, queue, enqueued_at, started_at,
         finished_at, worker, name, value_bytes) = record
        if status not in _STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(_STATUSES)}")
        if err is not None and (not isinstance(err, list) or not 2 <= len(err) <= 3
                                or not all(isinstance(part, str) for part in err)):
            raise ValueError("the error is not [type, message, module]")
        if type(attempts) is not int:
            raise ValueError("attempts is not an integer")
        return Result(
            id=_text(job_id, "id", required=True),
            status=status,
            value=None if value_bytes is None else serializer_for(name).loads(value_bytes),
            error=None if err is None else ErrorInfo(*err),
            traceback=_text(traceback, "traceback"),
            attempts=attempts,
            task=_text(task, "task"),
            queue=_text(queue, "queue"),
            enqueued_at=_time(enqueued_at, "enqueued_at"),
            started_at=_time(started_at, "started_at"),
            finished_at=_time(finished_at, "finished_at"),
            worker=_text(worker, "worker"),
        )
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(
            f"a stored result could not be decoded ({type(exc).__name__}: {exc}); the record "
            "is corrupt or was not written by sitq"
        ) from exc


def _text(raw: Any, field: str, required: bool = False) -> Any:
    if (raw is not None or required) and not isinstance(raw, str):
        raise ValueError(f"{field} is not a string")
    return raw


def _time(raw: Any, field: str) -> datetime | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{field} is not a timestamp")
    return datetime.fromtimestamp(raw, UTC)


# ---------------------------------------------------------------------------- chains
@dataclass(slots=True)
class Continuation:
    """What ``Job.chain`` carries: the steps after the job, and what the step before it
    left: its value (serialized and signed, ``previous``) or, once a step failed for
    good, that step's id and error (``failed``)."""

    steps: list[Job]
    previous: bytes | None = None
    failed: tuple[str, str] | None = None


def encode_continuation(continuation: Continuation) -> bytes:
    blob: bytes = msgpack.packb(
        {"v": CONTINUATION_VERSION, "steps": [job.to_dict() for job in continuation.steps],
         "prev": continuation.previous, "failed": continuation.failed},
        use_bin_type=True,
    )
    return blob


def decode_continuation(blob: bytes) -> Continuation:
    try:
        data = msgpack.unpackb(blob, raw=False)
        if "v" in data:
            _version("chain continuation", data["v"], CONTINUATION_VERSION)
        failed = data.get("failed")
        return Continuation(
            [Job.from_dict(step) for step in data["steps"]], data.get("prev"),
            None if failed is None else (str(failed[0]), str(failed[1])),
        )
    except SerializationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"the job's chain continuation is malformed: {exc}") from exc


def encode_value(value: Any, serializer: Serializer, signer: Signer) -> bytes:
    """A step's return value as the next step receives it."""
    return signer.sign(serializer.dumps(value))


def decode_value(data: bytes, serializer: Serializer, signer: Signer) -> Any:
    return serializer.loads(signer.verify(data, "chain value"))
