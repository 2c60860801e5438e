"""Result, its status values and the stored error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar, cast

from .errors import TaskFailed

__all__ = ["ErrorInfo", "Result", "Status"]

T = TypeVar("T")

#: ``pending`` (queued or running), ``success`` or ``failed``.
Status = Literal["pending", "success", "failed"]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What a failed job raised: the exception's type name, message and module.

    ``str(info)`` is ``"ValueError: message"``.
    """

    type: str
    message: str
    module: str = "builtins"

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Describe ``exc``; an exception relayed from another process (a worker kind that
        runs jobs elsewhere) may carry the original as ``__sitq_error__``."""
        relayed = getattr(exc, "__sitq_error__", None)
        if isinstance(relayed, ErrorInfo):
            return relayed
        kind = type(exc)
        try:
            message = str(exc)
        except Exception as err:  # a task's exception whose __str__ itself raises
            message = f"<str() failed: {type(err).__name__}: {err}>"
        return cls(kind.__name__, message, kind.__module__)


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    """The outcome of one job, as stored by the backend.

    Every datetime is timezone-aware UTC. ``attempts`` is how many times the job was
    started. ``worker`` names the worker that finished it (``host:pid:n``).
    """

    id: str
    status: Status
    value: T | None = None
    error: ErrorInfo | None = None
    traceback: str | None = None
    attempts: int = 0
    task: str | None = None
    queue: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def unwrap(self) -> T:
        """The value of a successful job; raises :class:`TaskFailed` for a failed one.

        ``TaskFailed`` carries the worker's traceback (``exc.remote_traceback``).
        """
        if self.status == "success":
            return cast(T, self.value)  # None is a valid value of a successful job
        if self.status == "failed":
            raise TaskFailed(self)
        raise TaskFailed(
            Result(
                id=self.id,
                status="failed",
                error=ErrorInfo("Pending", "the job has not finished yet", "sitq"),
            )
        )

    def __repr__(self) -> str:
        if self.status == "failed":
            return f"<Result {self.id} failed: {self.error}>"
        if self.status == "success":
            return f"<Result {self.id} success: {self.value!r:.60}>"
        return f"<Result {self.id} {self.status}>"


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


#: Positions of the stored metadata (a msgpack array: cheaper to pack than a map), followed
#: by the serializer name and the serialized value.
RESULT_FIELDS = ("id", "s", "e", "t", "a", "n", "q", "eq", "st", "fi", "w")


def result_meta(
    job_id: str, status: str, error: ErrorInfo | None, traceback: str | None, attempts: int,
    task: str | None, queue: str | None, enqueued_at: float | None, started_at: float | None,
    finished_at: float | None, worker: str | None,
) -> list[Any]:
    """The stored metadata of a result (everything but the value), in
    :data:`RESULT_FIELDS` order; times are epoch seconds. Workers build it directly,
    without a :class:`Result` in between."""
    return [
        job_id, status,
        None if error is None else [error.type, error.message, error.module],
        traceback, attempts, task, queue, enqueued_at, started_at, finished_at, worker,
    ]


def result_fields(result: Result[Any]) -> list[Any]:
    """Plain metadata of a result (everything but the value), for storage."""
    return result_meta(
        result.id, result.status, result.error, result.traceback, result.attempts,
        result.task, result.queue, _ts(result.enqueued_at), _ts(result.started_at),
        _ts(result.finished_at), result.worker,
    )


_STATUSES = ("pending", "success", "failed")


def result_from_fields(data: dict[str, Any], value: Any) -> Result[Any]:
    """Rebuild a :class:`Result` from :func:`result_fields`; ``ValueError`` if the stored
    metadata does not have that shape (so a corrupt record never becomes a Result)."""
    from datetime import UTC

    def dt(key: str) -> datetime | None:
        raw = data.get(key)
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"field {key!r} is not a timestamp")
        return datetime.fromtimestamp(raw, UTC)

    def text(key: str, required: bool = False) -> str | None:
        raw = data.get(key)
        if raw is None and not required:
            return None
        if not isinstance(raw, str):
            raise ValueError(f"field {key!r} is not a string")
        return raw

    status = data.get("s")
    if status not in _STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(_STATUSES)}")
    err = data.get("e")
    error = None
    if err is not None:
        if (not isinstance(err, list | tuple) or not 2 <= len(err) <= 3
                or not all(isinstance(part, str) for part in err)):
            raise ValueError("field 'e' is not [type, message, module]")
        error = ErrorInfo(*err)
    attempts = data.get("a", 0)
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise ValueError("field 'a' is not an integer")
    return Result(
        id=text("id", required=True) or "",
        status=status,
        value=value,
        error=error,
        traceback=text("t"),
        attempts=attempts,
        task=text("n"),
        queue=text("q"),
        enqueued_at=dt("eq"),
        started_at=dt("st"),
        finished_at=dt("fi"),
        worker=text("w"),
    )
