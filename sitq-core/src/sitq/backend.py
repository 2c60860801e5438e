"""The Backend contract every store implements.

Every public method of :class:`Backend` is a template: it does the bookkeeping
(validation, eta normalisation, connecting, the result TTL, filtering by queue, waiting,
capability checks) and then calls one **storage step**. A backend implements storage
steps and overrides no public method (the conformance suite checks it).

Required storage steps (abstract)::

    _enqueue(jobs)                    insert; honour idempotency keys; return the ids
    _claim(queues, limit, lease, w)   hand out due jobs with a lease (atomically)
    _extend(jobs, lease)              renew leases; report lost or cancel-requested ones
    _finish(items)                    success / failed / retry / release, fenced by attempt
    _get_result(id)                   stored result bytes, or None
    _get_job(id)                      the job record, or None
    _cancel(id, result, ttl)          drop a queued job (storing ``result``) or flag a running one
    _stats(queues)                    depths per queue
    _purge(queues)                    delete everything stored for some queues
    _claim_tick(name, tick, queue)    record a cron tick once; True for the one winner

Optional storage steps (the default in brackets)::

    _connect() / _close()             open and release connections, end every task [no-op]
    _enqueue_one(job)                 a faster path for a single job [_enqueue([job])]
    _wait_result(id, timeout)         wait for a result by notification [look, then poll]
    _wait_for_jobs(queues, timeout)   wait for jobs by notification [sleep poll_interval]
    _dead_letters(queue, limit)       with ``supports_dead_letters`` [NotSupported]
    _requeue(id)                      with ``supports_dead_letters`` [NotSupported]
    _enqueue_in_transaction(jobs, c)  with ``supports_transactions`` [NotSupported]

What the base class does, so a backend never repeats it: ``eta`` and tick datetimes
arrive aware and in UTC; every step that stores a result gets the effective TTL in
seconds (``Finish.ttl``, ``_cancel``'s ``ttl``: the job's ``result_ttl``, else the
backend's); ``stats(queues)`` returns exactly the queues asked for (a step may return
more, or omit empty ones); ``connect()`` runs before a step that needs it;
capabilities a backend lacks are refused with :class:`~sitq.errors.NotSupported`.

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
* A successful or failed finish stores the result bytes for ``item.ttl`` seconds and ends
  the job; a job with ``key`` set frees the key.
* An idempotency key is scoped to its queue: while a job of queue Q holding key K is
  queued or running, enqueueing K into Q returns that job's id; K in another queue is
  another job.
* A cron tick belongs to the queue its schedule enqueues into: it is claimed once per
  ``(queue, name, tick)``, and ``purge([queue])`` forgets it.
* ``_purge(queues)`` deletes everything stored for those queues (jobs in every state,
  results, dead letters, idempotency keys, cron ticks) and nothing of other queues.
* ``_close`` ends every task and connection the backend started; it also runs after a
  ``_connect`` that failed, so it must cope with a half-open backend.
* With ``supports_dead_letters``, a failed job is kept and listed by ``_dead_letters`` and
  ``_requeue`` puts it back to ``queued``.

See ``docs/backends/writing.md`` for the full reference.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from .errors import ConfigurationError, NotSupported
from .job import Job, aware_utc

__all__ = [
    "DEFAULT_QUEUE",
    "DEFAULT_RESULT_TTL",
    "Backend",
    "CancelOutcome",
    "Finish",
    "LeaseState",
    "QueueStats",
]

DEFAULT_RESULT_TTL = 7 * 24 * 3600.0
#: The queue of a job (or a schedule) that names none.
DEFAULT_QUEUE = "default"

#: What a heartbeat learns about one lease.
LeaseState = Literal["ok", "lost", "cancel"]

#: What ``cancel`` did: removed a queued job, asked a running one to stop, found it
#: already finished, or found nothing.
CancelOutcome = Literal["cancelled", "requested", "finished", "not_found"]

FinishOutcome = Literal["success", "failed", "retry", "release"]

#: What a capability a backend lacks means for the user, and what to do instead.
_REFUSALS = {
    "supports_multiprocess": (
        "its store lives inside one process, so {what} in another process would see none "
        "of its jobs. Run the worker inside the process that enqueues "
        "(Worker(queue.backend)), or use a store that processes share, e.g. "
        "sqlite:///sitq.db"
    ),
    "supports_transactions": (
        "{what}: it cannot join the caller's database transaction. Enqueue without "
        "connection=, or use a backend that supports it (sitq-postgres)"
    ),
    "supports_dead_letters": (
        "{what}: it does not keep failed jobs. Read a failed job's error from its result "
        "(queue.get_result) instead"
    ),
}


@dataclass(slots=True)
class Finish:
    """One finished attempt, handed to :meth:`Backend._finish` in batches.

    ``result`` holds the encoded result for ``success``/``failed``; ``retry_delay`` is
    the back-off (seconds, from the store's now) for ``retry``. ``job.failures`` already
    counts this attempt's failure. ``ttl`` is filled in by :class:`Backend` before
    ``_finish`` runs: how long (seconds) to keep the result of a ``success``/``failed``.
    """

    job: Job
    outcome: FinishOutcome
    result: bytes | None = None
    retry_delay: float = 0.0
    ttl: float = DEFAULT_RESULT_TTL


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
    #: ``_wait_result`` / ``_wait_for_jobs`` are woken by the store instead of polling
    #: (the worker then waits after a claim that did not fill its free slots).
    supports_notifications: ClassVar[bool] = False
    #: ``enqueue(..., connection=conn)`` joins the caller's database transaction
    #: (implement ``_enqueue_in_transaction``).
    supports_transactions: ClassVar[bool] = False
    #: Several processes may share the store (False only for in-process stores: the
    #: ``sitq`` commands then refuse it).
    supports_multiprocess: ClassVar[bool] = True
    #: Failed jobs are kept, listable and re-enqueueable (implement ``_dead_letters``
    #: and ``_requeue``).
    supports_dead_letters: ClassVar[bool] = False
    #: A performance hint, not a capability: ``enqueue_many`` builds its next chunk while
    #: the previous one is in flight. Pays off when the store's work is I/O (a network
    #: round trip); a backend whose work runs on a Python thread in this process may
    #: measure it slower (GIL contention) and turn it off.
    overlap_enqueue: ClassVar[bool] = True
    #: Poll interval of the default ``_wait_for_jobs`` (seconds).
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
                try:
                    await self._connect()
                except BaseException:
                    # A connect that failed half-way leaves nothing behind either.
                    with contextlib.suppress(Exception):
                        await self._close()
                    raise
                self._connected = True

    async def aclose(self) -> None:
        """Release the backend's connections and end every task it started."""
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

    def require(self, capability: str, what: str) -> None:
        """Raise :class:`NotSupported` saying what to do if ``capability`` is False.

        ``capability`` is a flag name (``"supports_multiprocess"``); ``what`` names what
        was asked for (``"sitq worker"``, ``"dead-letter listing"``).
        """
        if getattr(self, capability):
            return
        hint = _REFUSALS.get(capability, "{what} is not available")
        raise NotSupported(
            f"{type(self).__name__} ({self.url or 'no URL'}) has {capability} = False: "
            + hint.format(what=what)
        )

    # ------------------------------------------------------------------ producing
    async def enqueue(self, job: Job, *, connection: Any = None) -> str:
        """Store one job; returns its id (or the id of the live job holding its ``key``
        in its queue). ``connection``: the caller's open transaction, with
        ``supports_transactions``; the job then exists only if that transaction commits."""
        if job.eta is not None:
            job.eta = aware_utc(job.eta, "eta")
        if connection is not None:
            return (await self._transactional([job], connection))[0]
        if not self._connected:
            await self.connect()
        return await self._enqueue_one(job)

    async def enqueue_many(self, jobs: Sequence[Job], *, connection: Any = None) -> list[str]:
        """Store several jobs (one round trip where the store allows); returns the ids."""
        if not jobs:
            return []
        for job in jobs:
            if job.eta is not None:
                job.eta = aware_utc(job.eta, "eta")
        if connection is not None:
            return await self._transactional(list(jobs), connection)
        await self.connect()
        return await self._enqueue(list(jobs))

    async def _transactional(self, jobs: list[Job], connection: Any) -> list[str]:
        self.require("supports_transactions", "enqueue(connection=...)")
        await self.connect()
        return await self._enqueue_in_transaction(jobs, connection)

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
        default = self.result_ttl
        for item in items:
            item.ttl = item.job.result_ttl or default  # the job's own, else the backend's
        return await self._finish(list(items))

    async def complete(self, job: Job, result: bytes) -> bool:
        return (await self.finish_many([Finish(job, "success", result)]))[0]

    async def fail(self, job: Job, result: bytes) -> bool:
        return (await self.finish_many([Finish(job, "failed", result)]))[0]

    async def retry(self, job: Job, delay: float) -> bool:
        return (await self.finish_many([Finish(job, "retry", None, delay)]))[0]

    async def release(self, job: Job) -> bool:
        return (await self.finish_many([Finish(job, "release")]))[0]

    async def wait_for_jobs(self, queues: Sequence[str], timeout: float) -> None:
        """Return when jobs may be available in ``queues``, or after ``timeout`` seconds.

        Calls ``_wait_for_jobs``; before ``connect()`` (or after ``aclose()``) it only
        sleeps ``min(timeout, poll_interval)``.
        """
        if timeout <= 0:
            return
        if not self._connected or not queues:
            await asyncio.sleep(min(timeout, self.poll_interval))
            return
        await self._wait_for_jobs(list(queues), timeout)

    # ------------------------------------------------------------------ results
    async def get_result(self, job_id: str) -> bytes | None:
        await self.connect()
        return await self._get_result(job_id)

    async def wait_result(self, job_id: str, timeout: float | None) -> bytes | None:
        """The stored result, waiting up to ``timeout`` s (``None``: no limit) for it."""
        await self.connect()
        if timeout is not None and timeout <= 0:
            return await self._get_result(job_id)
        return await self._wait_result(job_id, timeout)

    # ------------------------------------------------------------------ management
    async def get_job(self, job_id: str) -> Job | None:
        await self.connect()
        return await self._get_job(job_id)

    async def cancel(self, job_id: str, result: bytes) -> CancelOutcome:
        """Remove a queued job (its result becomes ``result``) or ask a running one to
        stop. The job is read first for its result TTL (cancel is rare; one extra read)."""
        await self.connect()
        job = await self._get_job(job_id)
        ttl = (job.result_ttl if job is not None else None) or self.result_ttl
        return await self._cancel(job_id, result, ttl)

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        """Depths of ``queues`` (each one present, zeros if empty), or of every queue."""
        await self.connect()
        if queues is None:
            return await self._stats(None)
        wanted = list(queues)
        found = await self._stats(wanted)
        return {q: found.get(q) or QueueStats() for q in wanted}

    async def purge(self, queues: Sequence[str] | None = None) -> int:
        """Delete everything stored for ``queues`` (or for every queue): jobs in every
        state, results, dead letters, idempotency keys and cron ticks. Returns the number
        of jobs deleted."""
        await self.connect()
        return await self._purge(None if queues is None else list(queues))

    async def claim_tick(
        self, name: str, tick: datetime, *, queue: str = DEFAULT_QUEUE
    ) -> bool:
        """Claim cron tick ``tick`` of schedule ``name``, which enqueues into ``queue``:
        True exactly once across claimers."""
        await self.connect()
        return await self._claim_tick(name, aware_utc(tick, "tick"), queue)

    async def dead_letters(self, queue: str, limit: int = 100) -> list[Job]:
        self.require("supports_dead_letters", "dead_letters()")
        await self.connect()
        return await self._dead_letters(queue, limit)

    async def requeue(self, job_id: str) -> bool:
        """Put a dead-lettered job back to ``queued`` (its old result is dropped)."""
        self.require("supports_dead_letters", "requeue()")
        await self.connect()
        return await self._requeue(job_id)

    # ------------------------------------------------------------------ storage steps
    @abc.abstractmethod
    async def _enqueue(self, jobs: list[Job]) -> list[str]:
        """Insert ``jobs`` (ids are new). A job whose ``key`` is held by a live (queued or
        running) job of the same queue is not inserted; its position gets that job's id."""

    @abc.abstractmethod
    async def _claim(
        self, queues: list[str], limit: int, lease: float, worker: str
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs of ``queues`` for ``lease`` s (see the rules)."""

    @abc.abstractmethod
    async def _extend(self, jobs: list[Job], lease: float) -> list[LeaseState]:
        """Renew the lease of each job whose stored attempt still matches."""

    @abc.abstractmethod
    async def _finish(self, items: list[Finish]) -> list[bool]:
        """Record each finished attempt; ``False`` where the attempt is fenced."""

    @abc.abstractmethod
    async def _get_result(self, job_id: str) -> bytes | None:
        """The stored (unexpired) result bytes, or None."""

    @abc.abstractmethod
    async def _get_job(self, job_id: str) -> Job | None:
        """The job record (queued, running or dead-lettered), or None."""

    @abc.abstractmethod
    async def _cancel(self, job_id: str, result: bytes, ttl: float) -> CancelOutcome:
        """Delete a queued job and store ``result`` for ``ttl`` s (``"cancelled"``), flag a
        running one (``"requested"``), or report ``"finished"`` / ``"not_found"``."""

    @abc.abstractmethod
    async def _stats(self, queues: list[str] | None) -> dict[str, QueueStats]:
        """Depths per queue, of ``queues`` or of every queue the store knows."""

    @abc.abstractmethod
    async def _purge(self, queues: list[str] | None) -> int:
        """Delete everything of ``queues`` (None: every queue); return the jobs deleted."""

    @abc.abstractmethod
    async def _claim_tick(self, name: str, tick: datetime, queue: str) -> bool:
        """Record tick ``(queue, name, tick)`` if absent, atomically; True if recorded."""

    async def _connect(self) -> None:
        """Open connections (called once by ``connect()``)."""
        return None

    async def _close(self) -> None:
        """Release connections and end every task the backend started."""
        return None

    async def _enqueue_one(self, job: Job) -> str:
        """One job: a backend may override this with a faster path."""
        return (await self._enqueue([job]))[0]

    async def _wait_result(self, job_id: str, timeout: float | None) -> bytes | None:
        """Look for the result, then wait for it up to ``timeout`` s (None: no limit).

        The default polls with a growing interval. A backend with notifications overrides
        it: subscribe first, then look, so a result stored in between is not missed.
        """
        data = await self._get_result(job_id)
        if data is not None:
            return data
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

    async def _wait_for_jobs(self, queues: list[str], timeout: float) -> None:
        """Return when jobs may be due in ``queues``, or after at most ``timeout`` s.

        The default sleeps ``min(timeout, poll_interval)``; a backend with notifications
        overrides it to wake on enqueue (and when its next scheduled job is due).
        """
        await asyncio.sleep(min(timeout, self.poll_interval))

    async def _dead_letters(self, queue: str, limit: int) -> list[Job]:
        """Up to ``limit`` failed jobs of ``queue`` (with ``supports_dead_letters``)."""
        raise NotSupported(f"{type(self).__name__} declares no _dead_letters step")

    async def _requeue(self, job_id: str) -> bool:
        """Put a failed job back to queued (with ``supports_dead_letters``)."""
        raise NotSupported(f"{type(self).__name__} declares no _requeue step")

    async def _enqueue_in_transaction(self, jobs: list[Job], connection: Any) -> list[str]:
        """``_enqueue`` through the caller's ``connection``, inside its open transaction
        (with ``supports_transactions``)."""
        raise NotSupported(f"{type(self).__name__} declares no _enqueue_in_transaction step")
