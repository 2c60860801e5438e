"""The Backend contract every store implements.

Public methods do the bookkeeping (validation, connection, default batching, waiting)
and call one abstract storage step each, so a backend implements a small surface::

    _connect / _close                 open and release connections
    _enqueue(jobs)                    insert; honour idempotency keys; return the ids
    _claim(queues, limit, lease, w)   hand out due jobs with a lease (atomically)
    _extend(jobs, lease)              renew leases; report lost or cancel-requested ones
    _finish(items)                    success / failed / retry / release, fenced by attempt
    _get_result(id)                   stored result bytes, or None
    _get_job(id)                      the job record, or None
    _cancel(id, result)               drop a queued job (storing ``result``) or flag a running one
    _stats(queues) / _purge(queues)   depths per queue; delete everything of some queues
    _claim_tick(name, tick)           record a cron tick once; True for the one winner

Rules the conformance suite (:mod:`sitq.testing`) checks:

* A claim hands a job to one claimer only, increments ``attempt`` (the fencing token),
  sets ``state="running"``, ``lease_until`` and ``worker``; due-ness and lease deadlines
  follow the store's clock. Among due jobs of the claimed queues: expired leases first,
  then higher ``priority``, then earlier ``eta``/``created_at``. A claim that takes over an
  expired lease increments ``lease_expiries``.
* ``_extend`` and ``_finish`` carry ``job.attempt``; a stored job whose attempt differs
  (the lease was taken over) or that is no longer running is rejected (``"lost"``/``False``).
* ``retry`` puts the job back to ``queued`` with ``eta = store now + retry_delay`` and the
  ``failures`` count from the item's job; ``release`` puts it back due now.
* A successful or failed finish stores the result bytes with the job's ``result_ttl``
  (or the backend default) and ends the job; a job with ``key`` set frees the key.
* With ``supports_dead_letters``, a failed job is kept and listed by ``_dead_letters`` and
  ``_requeue`` puts it back to ``queued``.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from .errors import ConfigurationError, NotSupported
from .job import Job, aware_utc

__all__ = [
    "DEFAULT_RESULT_TTL",
    "Backend",
    "CancelOutcome",
    "Finish",
    "LeaseState",
    "QueueStats",
]

DEFAULT_RESULT_TTL = 7 * 24 * 3600.0

#: What a heartbeat learns about one lease.
LeaseState = Literal["ok", "lost", "cancel"]

#: What ``cancel`` did: removed a queued job, asked a running one to stop, found it
#: already finished, or found nothing.
CancelOutcome = Literal["cancelled", "requested", "finished", "not_found"]

FinishOutcome = Literal["success", "failed", "retry", "release"]


@dataclass(slots=True)
class Finish:
    """One finished attempt, handed to :meth:`Backend._finish` in batches.

    ``result`` holds the encoded result for ``success``/``failed``; ``retry_delay`` is
    the back-off (seconds, from the store's now) for ``retry``. ``job.failures`` already
    counts this attempt's failure.
    """

    job: Job
    outcome: FinishOutcome
    result: bytes | None = None
    retry_delay: float = 0.0


@dataclass(slots=True)
class QueueStats:
    """Depths of one queue: due now, waiting for their ETA, leased, dead-lettered."""

    queued: int = 0
    scheduled: int = 0
    running: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "scheduled": self.scheduled,
            "running": self.running,
            "failed": self.failed,
        }


@dataclass(slots=True)
class _Poll:
    """Backoff for polling waits: starts fast, grows to ``maximum``."""

    interval: float = 0.005
    maximum: float = 0.25
    factor: float = 1.5
    current: float = field(default=0.0)

    def next(self) -> float:
        self.current = self.interval if not self.current else min(
            self.current * self.factor, self.maximum
        )
        return self.current


class Backend(abc.ABC):
    """Abstract base of every backend. See the module docstring for the contract."""

    #: URL schemes this class serves (informational; registration is by hook).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: ``wait_result`` / ``wait_for_jobs`` are woken by the store instead of polling.
    supports_notifications: ClassVar[bool] = False
    #: ``enqueue`` can join the caller's database transaction.
    supports_transactions: ClassVar[bool] = False
    #: Several processes may share the store (False only for in-process stores).
    supports_multiprocess: ClassVar[bool] = True
    #: Failed jobs are kept, listable and re-enqueueable.
    supports_dead_letters: ClassVar[bool] = False
    #: A performance hint, not a capability: ``enqueue_many`` builds its next chunk while
    #: the previous one is in flight. Pays off when the store's work is I/O (a network
    #: round trip); a backend whose work runs on a Python thread in this process may
    #: measure it slower (GIL contention) and turn it off.
    overlap_enqueue: ClassVar[bool] = True
    #: Poll interval of the default ``wait_for_jobs`` (seconds).
    poll_interval: ClassVar[float] = 0.05

    def __init__(self, *, result_ttl: float | None = None, url: str | None = None) -> None:
        self.url = url
        self.result_ttl = float(result_ttl) if result_ttl is not None else DEFAULT_RESULT_TTL
        if self.result_ttl <= 0:
            raise ConfigurationError(f"result_ttl must be > 0 seconds, got {result_ttl!r}")
        self._connected = False
        self._connect_lock: asyncio.Lock | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a backend from its URL. Backends override this to parse their URL."""
        return cls(url=url, **options)

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        if self._connected:
            return
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if not self._connected:
                await self._connect()
                self._connected = True

    async def aclose(self) -> None:
        if self._connected:
            self._connected = False
            await self._close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def connected(self) -> bool:
        return self._connected

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url or ''}>"

    # ------------------------------------------------------------------ producing
    async def enqueue(self, job: Job) -> str:
        """Store one job; returns its id (or the id of the live job holding its ``key``)."""
        if job.eta is not None:
            job.eta = aware_utc(job.eta, "eta")
        if not self._connected:
            await self.connect()
        return (await self._enqueue([job]))[0]

    async def enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        if not jobs:
            return []
        for job in jobs:
            if job.eta is not None:
                job.eta = aware_utc(job.eta, "eta")
        await self.connect()
        return await self._enqueue(list(jobs))

    # ------------------------------------------------------------------ consuming
    async def claim(
        self, queues: Sequence[str], *, limit: int = 1, lease: float = 30.0, worker: str = ""
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs from ``queues`` to ``worker`` for ``lease`` s."""
        if limit <= 0 or not queues:
            return []
        await self.connect()
        return await self._claim(list(queues), limit, lease, worker)

    async def extend(self, jobs: Sequence[Job], lease: float) -> list[LeaseState]:
        """Heartbeat: renew leases. ``lost`` = taken over or finished, ``cancel`` = stop it."""
        if not jobs:
            return []
        return await self._extend(list(jobs), lease)

    async def finish_many(self, items: Sequence[Finish]) -> list[bool]:
        """Record finished attempts; ``False`` for each one whose lease was lost (fenced)."""
        if not items:
            return []
        return await self._finish(list(items))

    async def complete(self, job: Job, result: bytes) -> bool:
        return (await self._finish([Finish(job, "success", result)]))[0]

    async def fail(self, job: Job, result: bytes) -> bool:
        return (await self._finish([Finish(job, "failed", result)]))[0]

    async def retry(self, job: Job, delay: float) -> bool:
        return (await self._finish([Finish(job, "retry", None, delay)]))[0]

    async def release(self, job: Job) -> bool:
        return (await self._finish([Finish(job, "release")]))[0]

    async def wait_for_jobs(self, queues: Sequence[str], timeout: float) -> None:
        """Return when jobs may be available in ``queues``, or after ``timeout`` seconds.

        The default sleeps ``min(timeout, poll_interval)``; stores with notifications
        override it to wake on enqueue.
        """
        await asyncio.sleep(min(timeout, self.poll_interval))

    # ------------------------------------------------------------------ results
    async def get_result(self, job_id: str) -> bytes | None:
        await self.connect()
        return await self._get_result(job_id)

    async def wait_result(self, job_id: str, timeout: float | None) -> bytes | None:
        """The stored result, waiting up to ``timeout`` s (``None``: no limit) for it."""
        await self.connect()
        data = await self._get_result(job_id)
        if data is not None or (timeout is not None and timeout <= 0):
            return data
        if self.supports_notifications:
            return await self._wait_result(job_id, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = _Poll()
        while True:
            delay = poll.next()
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                delay = min(delay, remaining)
            await asyncio.sleep(delay)
            data = await self._get_result(job_id)
            if data is not None:
                return data

    async def _wait_result(self, job_id: str, timeout: float | None) -> bytes | None:
        """Wait for a result by notification (backends with notifications override)."""
        raise NotSupported(f"{type(self).__name__} has no result notifications")

    # ------------------------------------------------------------------ management
    async def get_job(self, job_id: str) -> Job | None:
        await self.connect()
        return await self._get_job(job_id)

    async def cancel(self, job_id: str, result: bytes) -> CancelOutcome:
        await self.connect()
        return await self._cancel(job_id, result)

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        await self.connect()
        return await self._stats(None if queues is None else list(queues))

    async def purge(self, queues: Sequence[str] | None = None) -> int:
        """Delete the jobs (and results) of ``queues``, or of every queue; returns a count."""
        await self.connect()
        return await self._purge(None if queues is None else list(queues))

    async def claim_tick(self, name: str, tick: datetime) -> bool:
        """Claim cron tick ``tick`` of schedule ``name``: True exactly once across claimers."""
        await self.connect()
        return await self._claim_tick(name, aware_utc(tick, "tick"))

    async def dead_letters(self, queue: str, limit: int = 100) -> list[Job]:
        self._require("supports_dead_letters", "dead-letter listing")
        await self.connect()
        return await self._dead_letters(queue, limit)

    async def requeue(self, job_id: str) -> bool:
        """Put a dead-lettered job back to ``queued`` (its old result is dropped)."""
        self._require("supports_dead_letters", "re-enqueueing dead letters")
        await self.connect()
        return await self._requeue(job_id)

    def _require(self, capability: str, what: str) -> None:
        if not getattr(self, capability):
            raise NotSupported(
                f"{type(self).__name__} does not support {what} ({capability} is False)"
            )

    # ------------------------------------------------------------------ storage steps
    @abc.abstractmethod
    async def _connect(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _enqueue(self, jobs: list[Job]) -> list[str]: ...

    @abc.abstractmethod
    async def _claim(
        self, queues: list[str], limit: int, lease: float, worker: str
    ) -> list[Job]: ...

    @abc.abstractmethod
    async def _extend(self, jobs: list[Job], lease: float) -> list[LeaseState]: ...

    @abc.abstractmethod
    async def _finish(self, items: list[Finish]) -> list[bool]: ...

    @abc.abstractmethod
    async def _get_result(self, job_id: str) -> bytes | None: ...

    @abc.abstractmethod
    async def _get_job(self, job_id: str) -> Job | None: ...

    @abc.abstractmethod
    async def _cancel(self, job_id: str, result: bytes) -> CancelOutcome: ...

    @abc.abstractmethod
    async def _stats(self, queues: list[str] | None) -> dict[str, QueueStats]: ...

    @abc.abstractmethod
    async def _purge(self, queues: list[str] | None) -> int: ...

    @abc.abstractmethod
    async def _claim_tick(self, name: str, tick: datetime) -> bool: ...

    async def _dead_letters(self, queue: str, limit: int) -> list[Job]:
        raise NotSupported(type(self).__name__)

    async def _requeue(self, job_id: str) -> bool:
        raise NotSupported(type(self).__name__)
