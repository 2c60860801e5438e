"""SQLiteBackend: sitq's embedded default store, one database file shared by processes.

How it stays correct with several worker processes on one file:

* The database runs in WAL mode: readers never block, and one writer at a time holds the
  write lock. Every read-modify-write step (enqueue, claim, heartbeat, finish, cancel,
  requeue, tick claim) is one ``BEGIN IMMEDIATE`` transaction, which takes the write lock
  up front, so two processes can never both read a job as free and then both take it.
* Each step is one function call on the backend's connection thread (stdlib
  ``sqlite3``; :mod:`._connection`), ``BEGIN`` to ``COMMIT``: the write lock is never
  held while other coroutines run. Steps that arrive meanwhile are group-committed, and
  small steps run inline on the event loop (:mod:`._store`).
* A writer that finds the lock taken tries again every millisecond or so for up to
  ``4 x busy_timeout`` (at least ``min_lock_wait``, 20 s) before it reports a
  :class:`BackendError`; a claim that would find nothing never takes the lock.
* Waiting workers and ``get_result`` calls are woken by a watch on the WAL file
  (:mod:`._notify`), and by the next scheduled job's due time.

The clock: SQLite has no server clock, so due-ness, leases and expiries use the wall
clock (``time.time()``) of the process running the step, read *inside* the transaction
(after the write lock is taken). Processes sharing a file share a machine and so one
clock; a job without ``eta`` is ordered by the store's time of enqueue, never by the
producer's ``created_at``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson

from sitq.backend import Backend, CancelOutcome, Finish, LeaseState, QueueStats
from sitq.errors import BackendError, BackendUnavailable
from sitq.job import Job

from . import _steps as steps
from ._connection import BUSY_POLL_MS, is_busy
from ._notify import Changes
from ._rows import claimed_jobs
from ._schema import MIGRATIONS, SchemaVersionError, migrate
from ._store import Store
from ._url import SQLiteOptions, check_busy_timeout, check_synchronous, parse_url

__all__ = ["SQLiteBackend", "SchemaVersionError"]

#: How often (seconds) a backend deletes expired results, dead letters and old ticks.
PURGE_INTERVAL = 60.0
#: Steps of at most this many jobs may run on the event loop.
INLINE_MAX_JOBS = 10
#: Longest wait (s) of ``get_result`` between two looks when no change is seen (a
#: safety net: every commit wakes waiters).
RESULT_RECHECK = 1.0


class SQLiteBackend(Backend):
    """A sitq backend on one SQLite database file (``sqlite:///path.db``).

    ``busy_timeout`` (milliseconds; a step waits ``4 x busy_timeout``, at least 20 s, for
    the write lock) and ``synchronous`` (``NORMAL``, or ``FULL`` to survive power loss)
    come from the URL's query or keyword arguments; keywords win.
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    #: Waits are woken by a watch on the WAL file (or a data_version poll): see _notify.
    supports_notifications: ClassVar[bool] = True
    supports_transactions: ClassVar[bool] = False  # sitq uses its own connection
    supports_multiprocess: ClassVar[bool] = True
    supports_dead_letters: ClassVar[bool] = True
    #: Building the next enqueue chunk while the connection thread writes the last one
    #: made both wait for the GIL: sequential chunks measured faster.
    overlap_enqueue: ClassVar[bool] = False
    #: Migrations applied on connect (a subclass may extend them).
    migrations: ClassVar[Mapping[int, Sequence[str]]] = MIGRATIONS
    #: Most jobs one claim takes (a worker asks again at once while it has free slots):
    #: keeps the write lock short. 200 measured faster than 50 for a draining worker.
    max_claim: ClassVar[int] = 200
    #: Most steps one group transaction runs (bounds how long the write lock is held).
    max_group: ClassVar[int] = 32
    #: A step waits for the write lock ``4 x busy_timeout``, and at least this many
    #: seconds, before it fails.
    min_lock_wait: ClassVar[float] = 20.0

    def __init__(
        self,
        path: str | SQLiteOptions,
        *,
        busy_timeout: int | None = None,
        synchronous: str | None = None,
        result_ttl: float | None = None,
        url: str | None = None,
    ) -> None:
        opts = path if isinstance(path, SQLiteOptions) else SQLiteOptions(path=str(path))
        super().__init__(result_ttl=result_ttl, url=url or f"sqlite:///{opts.path}")
        self.path = os.path.abspath(opts.path)
        self.busy_timeout = check_busy_timeout(
            opts.busy_timeout if busy_timeout is None else busy_timeout
        )
        self.synchronous = check_synchronous(
            opts.synchronous if synchronous is None else synchronous
        )
        self._store: Store | None = None
        self._changes: Changes | None = None
        self._next_purge = 0.0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteBackend:
        return cls(parse_url(url), url=url, **options)

    @property
    def lock_wait(self) -> float:
        """Seconds a step waits for the write lock before it fails."""
        return max(self.min_lock_wait, 4 * self.busy_timeout / 1000)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise BackendUnavailable(f"the SQLite backend for {self.path} is not connected")
        return self._store

    # ------------------------------------------------------------------ lifecycle
    async def _connect(self) -> None:
        directory = os.path.dirname(self.path)
        if not await asyncio.to_thread(os.path.isdir, directory):
            raise BackendUnavailable(
                f"cannot open the SQLite database {self.path}: the directory {directory} "
                "does not exist. Create it first, or check the URL (three slashes before a "
                "relative path, four before an absolute one)"
            )
        store = Store(self.path, lock_wait=self.lock_wait, max_group=self.max_group)
        try:
            await store.open(self._setup, inline_writes=self.synchronous in ("OFF", "NORMAL"))
            assert store.inline is not None
            changes = Changes(self.path, store.inline)
            changes.start()
        except BaseException:
            await store.close()
            raise
        self._store, self._changes = store, changes

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_POLL_MS}")
        deadline = time.monotonic() + self.lock_wait
        while True:  # several processes may open a new file at once
            try:
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise BackendError(
                        f"could not put {self.path} in WAL mode (journal_mode is {mode!r}); "
                        "sitq needs WAL, which does not work on network file systems"
                    )
                migrate(conn, self.path, self.migrations)
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.001)

    async def _close(self) -> None:
        changes, self._changes = self._changes, None
        if changes is not None:
            await changes.close()
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    # ------------------------------------------------------------------ enqueue
    async def _enqueue(self, jobs: list[Job]) -> list[str]:
        store = self.store
        if len(jobs) <= INLINE_MAX_JOBS:
            done, ids = store.inline_write(steps.enqueue, jobs)
            if done:
                assert ids is not None and self._changes is not None
                self._changes.wrote()
                return ids
        return await store.write(steps.enqueue, jobs)

    # ------------------------------------------------------------------ claim
    async def _claim(self, queues: list[str], limit: int, lease: float, worker: str) -> list[Job]:
        store = self.store
        # A look first, on the event loop (a read takes no lock): most wake-ups of an
        # idle worker find nothing and cost no thread hop.
        if not await store.read(steps.claimable, time.time(), queues):
            return []
        now, text = await store.write(steps.claim, queues, min(limit, self.max_claim), lease,
                                      worker)
        # Jobs are built here, after the transaction: the write lock (and the connection
        # thread) is held only for the SQL.
        return claimed_jobs(text, datetime.fromtimestamp(now + lease, UTC),
                            datetime.fromtimestamp(now, UTC), worker)

    async def _wait_for_jobs(self, queues: list[str], timeout: float) -> None:
        store, changes = self.store, self._changes
        assert changes is not None
        seen = changes.seen
        now = time.time()
        if await store.read(steps.claimable, now, queues):
            return
        due = await store.read(steps.next_due, queues)
        if due is not None:
            timeout = min(timeout, max(due - now, 0.0))
        await changes.wait(seen, timeout)

    # ------------------------------------------------------------------ leases, finish
    async def _extend(self, jobs: list[Job], lease: float) -> list[LeaseState]:
        return await self.store.write(steps.extend, jobs, lease)

    async def _finish(self, items: list[Finish]) -> list[bool]:
        # Built here, on the event loop: the ids to fence, and the successes' rows and
        # result bytes for one aggregated INSERT.
        ids = orjson.dumps([item.job.id for item in items]).decode()
        rows: list[list[Any]] = []
        parts: list[bytes] = []
        offset = 1
        for item in items:
            if item.outcome == "success" and item.result is not None:
                size = len(item.result)
                rows.append([item.job.id, item.job.queue, item.ttl, offset, size])
                parts.append(item.result)
                offset += size
        purge = time.time() >= self._next_purge
        if purge:
            self._next_purge = time.time() + PURGE_INTERVAL
        return await self.store.write(steps.finish, items, ids, rows, b"".join(parts), purge)

    # ------------------------------------------------------------------ results, jobs
    async def _get_result(self, job_id: str) -> bytes | None:
        return await self.store.read(steps.get_result, job_id)

    async def _wait_result(self, job_id: str, timeout: float | None) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            changes = self._changes
            if changes is None:
                raise BackendUnavailable(f"the SQLite backend for {self.path} was closed")
            seen = changes.seen
            data = await self._get_result(job_id)
            if data is not None:
                return data
            wait = RESULT_RECHECK
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return None
            await changes.wait(seen, wait)

    async def _get_job(self, job_id: str) -> Job | None:
        return await self.store.read(steps.get_job, job_id)

    async def _cancel(self, job_id: str, result: bytes, ttl: float) -> CancelOutcome:
        return await self.store.write(steps.cancel, job_id, result, ttl)

    # ------------------------------------------------------------------ management
    async def _stats(self, queues: list[str] | None) -> dict[str, QueueStats]:
        return await self.store.run(steps.stats, queues)

    async def _purge(self, queues: list[str] | None) -> int:
        return await self.store.write(steps.purge, queues)

    async def _claim_tick(self, name: str, tick: datetime, queue: str) -> bool:
        return await self.store.write(steps.claim_tick, name, tick.timestamp(), queue)

    async def _dead_letters(self, queue: str, limit: int) -> list[Job]:
        return await self.store.run(steps.dead_letters, queue, limit)

    async def _requeue(self, job_id: str) -> bool:
        return await self.store.write(steps.requeue, job_id)
