"""Result, its status values and the stored error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar, cast

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
