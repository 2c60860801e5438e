"""SQLiteBackend: sitq's embedded default store, one database file shared by processes.

How it stays correct with several worker processes on one file:

* The database runs in WAL mode: readers never block, and one writer at a time holds the
  write lock. Every read-modify-write step (enqueue, claim, heartbeat, finish, cancel,
  requeue, tick claim) is one ``BEGIN IMMEDIATE`` transaction, which takes the write lock
  up front, so two processes can never both read a job as free and then both take it.
* Each step runs as *one* call on aiosqlite's connection thread (``BEGIN`` … ``COMMIT``
  without returning to the event loop in between), so the write lock is held for the
  few microseconds of the SQL and never while other coroutines run.
* Steps that arrive while a transaction is running are **group-committed**: the next
  transaction runs all of them (each in its own ``SAVEPOINT``, so one failing step rolls
  back alone), which turns a worker's claim and its batched finish into one ``BEGIN
  IMMEDIATE`` … ``COMMIT`` and one thread hop instead of two.
* A busy database is waited for (``busy_timeout``), and a step that still finds it
  locked is rolled back and retried with jittered back-off for up to ``4 x
  busy_timeout`` (at least ``min_lock_wait``, 20 s) before it is reported as a
  :class:`BackendError`.

The clock: SQLite has no server clock, so due-ness, leases and expiries use the wall
clock (``time.time()``) of the process running the step, read *inside* the transaction
(after the write lock is taken). Processes sharing a file share a machine and so one
clock; a job without ``eta`` is ordered by the store's time of enqueue, never by the
producer's ``created_at``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import orjson

from sitq.backend import Backend, CancelOutcome, Finish, LeaseState, QueueStats
from sitq.errors import BackendError, BackendUnavailable, NotInstalled
from sitq.job import Job

from ._schema import MIGRATIONS, SchemaVersionError, migrate
from ._url import SQLiteOptions, check_busy_timeout, check_synchronous, parse_url

try:
    import aiosqlite
except ImportError:  # pragma: no cover - exercised by a test that hides the module
    aiosqlite = None  # type: ignore[assignment]

__all__ = ["SQLiteBackend", "SchemaVersionError"]

log = logging.getLogger("sitq.sqlite")

T = TypeVar("T")

#: How often (seconds) a backend deletes expired results, dead letters and old ticks.
PURGE_INTERVAL = 60.0
#: Steps of at most this many jobs may run on the event loop (see ``_open_inline``).
INLINE_MAX_JOBS = 10
#: After this many inline writes, the connection thread checkpoints the WAL.
INLINE_CHECKPOINT = 500
#: Claimed cron ticks are kept this long (seconds), far beyond any misfire grace.
TICK_RETENTION = 7 * 24 * 3600.0

_COLUMNS = (
    "id, queue, state, priority, due, eta, attempt, failures, lease_expiries, max_retries,"
    " timeout, result_ttl, created_at, lease_until, started_at, worker, cancel_requested,"
    " key, serializer, task, headers, payload, chain"
)
_INSERT = (
    "INSERT INTO sitq_jobs (id, queue, state, priority, due, eta, max_retries, timeout,"
    " result_ttl, created_at, key, live_key, serializer, task, headers, payload, chain)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_FENCE = "WHERE id = ? AND state = 'running' AND attempt = ?"

# A worker's claim and finish send many jobs through ONE statement each: rows travel as
# a JSON array (``json_each``) and blobs as one concatenated blob cut with ``substr``
# (which returns a BLOB for a BLOB). A statement that steps once needs the GIL only a few
# times; one that steps per row needs it per row, and while the event loop runs jobs the
# connection thread waits up to the interpreter's switch interval (5 ms) for each, so
# per-row statements serialise the two threads. (A bulk enqueue keeps ``executemany``:
# its producer waits for it, so nothing competes for the GIL, and it measured faster.)
_CLAIM_COLUMNS_JSON = (
    "json_array(e.key, j.id, j.queue, j.priority, j.eta, j.attempt, j.failures,"
    " j.lease_expiries, j.max_retries, j.timeout, j.result_ttl, j.created_at,"
    " j.cancel_requested, j.key, j.serializer, j.task, j.headers, hex(j.payload),"
    " CASE WHEN j.chain IS NULL THEN NULL ELSE hex(j.chain) END)"
)
_CLAIMED_JSON = (
    f"SELECT json_group_array({_CLAIM_COLUMNS_JSON}) FROM json_each(?) e"
    " JOIN sitq_jobs j ON j.rowid = e.value"
)
_LEASE_ROWIDS = (
    "UPDATE sitq_jobs SET state = 'running', attempt = attempt + 1,"
    " lease_expiries = lease_expiries + (state = 'running'),"
    " lease_until = ?, started_at = ?, worker = ?"
    " WHERE rowid IN (SELECT value FROM json_each(?))"
)
_PUT_RESULTS = (
    "INSERT OR REPLACE INTO sitq_results (id, queue, expires_at, data)"
    " SELECT value->>0, value->>1, ?1 + value->>2, substr(?2, value->>3, value->>4)"
    " FROM json_each(?3)"
)
_PUT_RESULT = "INSERT OR REPLACE INTO sitq_results (id, queue, expires_at, data) VALUES (?,?,?,?)"


def _driver() -> Any:
    if aiosqlite is None:
        raise NotInstalled(
            "the SQLite backend needs the aiosqlite driver, which is not installed: "
            "pip install sitq-sqlite (or pip install aiosqlite)"
        )
    return aiosqlite


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _row_job(
    row: Sequence[Any], lease_until: datetime | None = None, started_at: datetime | None = None
) -> Job:
    """A Job from a ``_COLUMNS`` row (claims pass the datetimes they share)."""
    (job_id, queue, state, priority, _due, eta, attempt, failures, lease_expiries,
     max_retries, timeout, result_ttl, created_at, lease_until_ts, started_at_ts, worker,
     cancel_requested, key, serializer, task, headers, payload, chain) = row
    return Job(
        job_id, queue, task, payload, serializer,
        json.loads(headers) if headers else {},
        priority, None if eta is None else datetime.fromtimestamp(eta, UTC), attempt,
        failures, lease_expiries, max_retries, timeout, key, result_ttl,
        datetime.fromtimestamp(created_at, UTC), chain,
        "queued" if state == "scheduled" else state,
        lease_until or _dt(lease_until_ts), worker, started_at or _dt(started_at_ts),
        bool(cancel_requested),
    )


class _Op:
    """One step waiting for the next group transaction."""

    __slots__ = ("args", "body", "claim", "future")

    def __init__(
        self, body: Callable[..., Any], args: tuple[Any, ...], claim: bool,
        future: asyncio.Future[Any],
    ) -> None:
        self.body = body
        self.args = args
        self.claim = claim
        self.future = future


def _claimed_jobs(
    text: str | None, lease_until: datetime, started_at: datetime, worker: str
) -> list[Job]:
    """Jobs from a claim's JSON rows (built on the event loop, not the connection
    thread), in claim order."""
    if not text:
        return []
    rows = orjson.loads(text)
    rows.sort(key=lambda row: row[0])
    return [
        Job(
            job_id, queue, task, bytes.fromhex(payload), serializer,
            json.loads(headers) if headers else {},
            priority, None if eta is None else datetime.fromtimestamp(eta, UTC), attempt,
            failures, lease_expiries, max_retries, timeout, key, result_ttl,
            datetime.fromtimestamp(created_at, UTC),
            None if chain is None else bytes.fromhex(chain), "running", lease_until,
            worker, started_at, bool(cancel_requested),
        )
        for (_, job_id, queue, priority, eta, attempt, failures, lease_expiries, max_retries,
             timeout, result_ttl, created_at, cancel_requested, key, serializer, task,
             headers, payload, chain) in rows
    ]


def _transaction(conn: sqlite3.Connection, body: Callable[..., T], *args: Any) -> T:
    """Run ``body(conn, now, *args)`` inside ``BEGIN IMMEDIATE`` … ``COMMIT``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = body(conn, time.time(), *args)
        conn.execute("COMMIT")
        return out
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SQLiteBackend(Backend):
    """A sitq backend on one SQLite database file (``sqlite:///path.db``).

    ``busy_timeout`` (milliseconds) and ``synchronous`` (``NORMAL``, or ``FULL`` to
    survive power loss) come from the URL's query or keyword arguments; keywords win.
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    supports_notifications: ClassVar[bool] = False  # waits poll; nothing pushes
    supports_transactions: ClassVar[bool] = False  # sitq uses its own connection
    supports_multiprocess: ClassVar[bool] = True
    supports_dead_letters: ClassVar[bool] = True
    #: Building the next enqueue chunk while aiosqlite's thread writes the last one made
    #: both wait for the GIL: sequential chunks measured faster.
    overlap_enqueue: ClassVar[bool] = False
    #: Migrations applied on connect (a subclass may extend them).
    migrations: ClassVar[Mapping[int, Sequence[str]]] = MIGRATIONS
    #: Most jobs one claim takes (a worker asks again at once while it has free slots):
    #: keeps the write lock short. 200 measured faster than 50 for a draining worker.
    max_claim: ClassVar[int] = 200
    #: Most steps one group transaction runs (bounds how long the write lock is held).
    max_group: ClassVar[int] = 32
    #: A step that finds the database locked is retried for ``4 x busy_timeout``, and
    #: at least this many seconds, before it fails.
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
        _driver()
        opts = path if isinstance(path, SQLiteOptions) else SQLiteOptions(path=str(path))
        super().__init__(result_ttl=result_ttl, url=url or f"sqlite:///{opts.path}")
        self.path = os.path.abspath(opts.path)
        self.busy_timeout = check_busy_timeout(
            opts.busy_timeout if busy_timeout is None else busy_timeout
        )
        self.synchronous = check_synchronous(
            opts.synchronous if synchronous is None else synchronous
        )
        self._db: Any = None
        self._next_purge = 0.0
        self._ops: list[_Op] = []
        self._inline: sqlite3.Connection | None = None
        self._inline_writes = 0
        self._checkpoints: set[asyncio.Future[None]] = set()
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteBackend:
        return cls(parse_url(url), url=url, **options)

    # ------------------------------------------------------------------ plumbing
    @property
    def _retry_for(self) -> float:
        return max(self.min_lock_wait, 4 * self.busy_timeout / 1000)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the connection's thread; retry while it is busy."""
        if self._db is None:
            await self.connect()
        deadline = 0.0
        delay = 0.005
        while True:
            try:
                # aiosqlite runs every call as a function on its connection thread; we
                # hand it a whole transaction so the write lock is never held across
                # event-loop turns (one thread hop per step instead of one per statement).
                return await self._db._execute(fn, self._db._conn, *args)  # type: ignore[no-any-return]
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise BackendError(f"SQLite error on {self.path}: {exc}") from exc
                now = time.monotonic()
                deadline = deadline or now + self._retry_for
                if now >= deadline:
                    raise BackendError(
                        f"the SQLite database {self.path} stayed locked for "
                        f"{self._retry_for:.0f}s ({exc}); another process holds a long "
                        "write transaction. Raise busy_timeout or find that process"
                    ) from exc
                log.debug("%s is busy (%s); retrying in %.3fs", self.path, exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)
            except sqlite3.Error as exc:
                raise BackendError(f"SQLite error on {self.path}: {exc}") from exc

    async def _write(self, body: Callable[..., T], *args: Any) -> T:
        """Run ``body(conn, now, *args)`` in the next group transaction."""
        return await self._submit(body, args, claim=False)  # type: ignore[no-any-return]

    async def _submit(self, body: Callable[..., Any], args: tuple[Any, ...], claim: bool) -> Any:
        if self._db is None:
            await self.connect()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(body, args, claim, future))
        if not self._flushing:
            # Nothing in flight: hand this step to the connection thread now, not from a
            # task (a task starts only after every ready job of the loop has run, and a
            # worker's next claim must overlap with the jobs it just started). The
            # flusher task then owns the step: cancelling a waiter never loses it.
            self._flushing = True
            ops = self._take_group()
            try:
                running = self._dispatch(self._group, ops)
            except Exception as exc:  # the connection went away under us
                self._flushing = False
                self._fail(ops, BackendUnavailable(
                    f"the SQLite connection to {self.path} is closed ({exc!r})"))
            else:
                self._flusher = asyncio.create_task(
                    self._flush(ops, running), name="sitq-sqlite-writes"
                )
        return await future

    def _take_group(self) -> list[_Op]:
        ops, self._ops = self._ops[: self.max_group], self._ops[self.max_group :]
        return ops

    def _dispatch(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Queue ``fn(conn, *args)`` on the connection thread at once."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._db._tx.put_nowait((future, functools.partial(fn, self._db._conn, *args)))
        return future

    async def _flush(self, ops: list[_Op], running: asyncio.Future[Any]) -> None:
        """Finish the group in flight, then run waiting steps a group per transaction."""
        try:
            while True:
                await self._complete(ops, running)
                if not self._ops:
                    return
                ops = self._take_group()
                running = self._dispatch(self._group, ops)
        finally:
            self._flushing = False

    async def _complete(self, ops: list[_Op], running: asyncio.Future[Any]) -> None:
        """Wait for a group's transaction (retrying it while the database is busy) and
        hand each step its outcome."""
        deadline = 0.0
        delay = 0.005
        while True:
            try:
                outcomes = await running
                break
            except sqlite3.OperationalError as exc:
                now = time.monotonic()
                deadline = deadline or now + self._retry_for
                if _is_busy(exc) and now < deadline:
                    log.debug("%s is busy (%s); retrying in %.3fs", self.path, exc, delay)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.25)
                    running = self._dispatch(self._group, ops)
                    continue
                self._fail(ops, self._backend_error(exc))
                return
            except sqlite3.Error as exc:
                self._fail(ops, self._backend_error(exc))
                return
            except Exception as exc:
                self._fail(ops, exc)
                return
        for op, (ok, value) in zip(ops, outcomes, strict=True):
            if op.future.done():
                continue
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(
                    self._backend_error(value) if isinstance(value, sqlite3.Error) else value
                )

    def _backend_error(self, exc: sqlite3.Error) -> BackendError:
        if _is_busy(exc):
            return BackendError(
                f"the SQLite database {self.path} stayed locked for {self._retry_for:.0f}s "
                f"({exc}); another process holds a long write transaction. Raise "
                "busy_timeout or find that process"
            )
        return BackendError(f"SQLite error on {self.path}: {exc}")

    @staticmethod
    def _fail(ops: list[_Op], exc: BaseException) -> None:
        for op in ops:
            if not op.future.done():
                op.future.set_exception(exc)

    def _group(self, conn: sqlite3.Connection, ops: list[_Op]) -> list[tuple[bool, Any]]:
        """One transaction for ``ops`` (on the connection thread). A lone step's error
        propagates (and a busy database is retried by ``_run``); in a group, each step
        runs in a savepoint and its error is returned for that step alone."""
        if all(op.claim for op in ops):
            # A read first (no lock in WAL mode): idle pollers never take the write lock.
            now = time.time()
            if not any(self._claimable(conn, op.args[0], now) for op in ops):
                return [(True, (now, [])) for _ in ops]
        if len(ops) == 1:
            op = ops[0]
            return [(True, _transaction(conn, op.body, *op.args))]
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            outcomes: list[tuple[bool, Any]] = []
            for op in ops:
                conn.execute("SAVEPOINT sitq_step")
                try:
                    value = op.body(conn, now, *op.args)
                except Exception as exc:
                    if _is_busy(exc):
                        raise
                    conn.execute("ROLLBACK TO sitq_step")
                    conn.execute("RELEASE sitq_step")
                    outcomes.append((False, exc))
                    continue
                conn.execute("RELEASE sitq_step")
                outcomes.append((True, value))
            conn.execute("COMMIT")
            return outcomes
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def _connect(self) -> None:
        driver = _driver()
        directory = os.path.dirname(self.path)
        if not await asyncio.to_thread(os.path.isdir, directory):
            raise BackendUnavailable(
                f"cannot open the SQLite database {self.path}: the directory {directory} "
                "does not exist. Create it first, or check the URL (three slashes before a "
                "relative path, four before an absolute one)"
            )
        pending = driver.connect(
            self.path, timeout=self.busy_timeout / 1000, isolation_level=None,
            cached_statements=256,
        )
        try:
            db = await pending
        except sqlite3.Error as exc:
            # aiosqlite stops its thread without waiting for it; let it end while the
            # loop is still alive.
            thread = getattr(pending, "_thread", None)
            if thread is not None:
                await asyncio.to_thread(thread.join, 5)
            raise BackendUnavailable(
                f"cannot open the SQLite database {self.path}: {exc}. Check that the "
                "directory exists and is writable"
            ) from exc
        if not (callable(getattr(db, "_execute", None)) and hasattr(db, "_tx")):  # pragma: no cover
            await db.close()
            raise BackendError(
                f"this aiosqlite ({getattr(driver, '__version__', '?')}) lacks "
                "Connection._execute/_tx, which sitq-sqlite relies on; install aiosqlite<1"
            )
        self._db = db
        try:
            await self._run(self._setup)
        except BaseException:
            self._db = None
            await db.close()
            raise
        if self.synchronous in ("OFF", "NORMAL"):
            self._inline = self._open_inline()

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BackendError(
                f"could not put {self.path} in WAL mode (journal_mode is {mode!r}); sitq "
                "needs WAL, which does not work on network file systems"
            )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        migrate(conn, self.path, self.migrations)

    def _open_inline(self) -> sqlite3.Connection | None:
        """A second connection used on the event loop itself for small steps (a single
        enqueue, a result lookup): a thread hop costs more than the SQL. It never waits
        for a lock (``busy_timeout = 0``: a busy database sends the step to the thread)
        and never checkpoints (that may fsync); the thread's connection does, and is
        asked to after every :data:`INLINE_CHECKPOINT` inline writes."""
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:  # pragma: no cover - the thread's connection worked
            log.debug("no inline connection to %s: %s", self.path, exc)
            return None
        return conn

    def _inline_write(self, body: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
        """Run a write on the event loop if nothing of ours is in flight (order is kept)
        and the lock is free; ``(False, None)`` sends it to the thread instead."""
        conn = self._inline
        if conn is None or self._flushing:
            return False, None
        try:
            out = _transaction(conn, body, *args)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return False, None
            raise self._backend_error(exc) from exc
        except sqlite3.Error as exc:
            raise self._backend_error(exc) from exc
        self._inline_writes += 1
        if self._inline_writes % INLINE_CHECKPOINT == 0:
            self._checkpoints.add(asyncio.ensure_future(self._checkpoint()))
        return True, out

    async def _checkpoint(self) -> None:
        try:
            await self._run(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)"))
        except Exception as exc:  # pragma: no cover - the next one will do
            log.debug("checkpoint of %s failed: %s", self.path, exc)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._checkpoints.discard(task)

    def _inline_read(self, fn: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
        conn = self._inline
        if conn is None:
            return False, None
        try:
            return True, fn(conn, *args)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return False, None
            raise self._backend_error(exc) from exc
        except sqlite3.Error as exc:
            raise self._backend_error(exc) from exc

    async def _close(self) -> None:
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.gather(flusher, return_exceptions=True)
        if self._checkpoints:
            await asyncio.gather(*self._checkpoints, return_exceptions=True)
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    def _purge_expired(self, conn: sqlite3.Connection, now: float) -> None:
        """Lazily delete expired results, dead letters and old ticks (inside a write)."""
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL
        conn.execute("DELETE FROM sitq_results WHERE expires_at <= ?", (now,))
        conn.execute(
            "DELETE FROM sitq_jobs WHERE state = 'failed' AND expires_at <= ?", (now,)
        )
        conn.execute("DELETE FROM sitq_ticks WHERE tick < ?", (now - TICK_RETENTION,))

    # ------------------------------------------------------------------ enqueue
    async def _enqueue(self, jobs: list[Job]) -> list[str]:
        if len(jobs) <= INLINE_MAX_JOBS:
            done, ids = self._inline_write(self._enqueue_tx, jobs)
            if done:
                assert ids is not None
                return ids
        return await self._write(self._enqueue_tx, jobs)

    def _enqueue_tx(self, conn: sqlite3.Connection, now: float, jobs: list[Job]) -> list[str]:
        rows = []
        keyed = False
        for job in jobs:
            eta = None if job.eta is None else job.eta.timestamp()
            due = now if eta is None else eta
            keyed = keyed or job.key is not None
            rows.append((
                job.id, job.queue, "scheduled" if due > now else "queued", job.priority,
                due, eta, job.max_retries, job.timeout, job.result_ttl,
                job.created_at.timestamp(), job.key, job.key, job.serializer, job.task,
                json.dumps(job.headers) if job.headers else None, job.payload, job.chain,
            ))
        if not keyed:
            conn.executemany(_INSERT, rows)
            return [job.id for job in jobs]
        ids = []
        for job, row in zip(jobs, rows, strict=True):
            if job.key is not None:
                held = conn.execute(
                    "SELECT id FROM sitq_jobs WHERE queue = ? AND live_key = ?",
                    (job.queue, job.key),
                ).fetchone()
                if held is not None:
                    ids.append(held[0])
                    continue
            conn.execute(_INSERT, row)
            ids.append(job.id)
        return ids

    # ------------------------------------------------------------------ claim
    async def _claim(self, queues: list[str], limit: int, lease: float, worker: str) -> list[Job]:
        limit = min(limit, self.max_claim)
        now, text = await self._submit(self._claim_tx, (queues, limit, lease, worker), claim=True)
        # Jobs are built here, after the transaction: the write lock (and the connection
        # thread) is held only for the SQL.
        return _claimed_jobs(text, datetime.fromtimestamp(now + lease, UTC),
                             datetime.fromtimestamp(now, UTC), worker)

    @staticmethod
    def _claimable(conn: sqlite3.Connection, queues: list[str], now: float) -> bool:
        for queue in queues:
            if conn.execute(
                "SELECT EXISTS (SELECT 1 FROM sitq_jobs WHERE state = 'queued' AND queue = ?)"
                " OR EXISTS (SELECT 1 FROM sitq_jobs WHERE state = 'scheduled' AND queue = ?"
                " AND due <= ?) OR EXISTS (SELECT 1 FROM sitq_jobs WHERE state = 'running'"
                " AND queue = ? AND lease_until <= ?)",
                (queue, queue, now, queue, now),
            ).fetchone()[0]:
                return True
        return False

    def _claim_tx(
        self, conn: sqlite3.Connection, now: float, queues: list[str], limit: int,
        lease: float, worker: str,
    ) -> tuple[float, str | None]:
        """Lease the jobs; returns the store's ``now`` and the claimed rows as JSON text
        (each row starts with its position in the claim order)."""
        expired: list[int] = []
        for queue in queues:
            conn.execute(
                "UPDATE sitq_jobs SET state = 'queued' WHERE state = 'scheduled'"
                " AND queue = ? AND due <= ?", (queue, now),
            )
            expired += json.loads(conn.execute(
                "SELECT json_group_array(rowid) FROM (SELECT rowid FROM sitq_jobs"
                " WHERE state = 'running' AND queue = ? AND lease_until <= ?"
                " ORDER BY lease_until LIMIT ?)", (queue, now, limit),
            ).fetchone()[0])
        if not expired and len(queues) == 1:
            # The common case: the best queued jobs, picked in one statement.
            rowids: str = conn.execute(
                "SELECT json_group_array(rowid) FROM (SELECT rowid FROM sitq_jobs"
                " WHERE state = 'queued' AND queue = ? ORDER BY priority DESC, due, rowid"
                " LIMIT ?)", (queues[0], limit),
            ).fetchone()[0]
        else:
            picked = [(0, 0, 0.0, rowid) for rowid in expired[:limit]]
            if len(picked) < limit:
                for queue in queues:
                    picked += [
                        (1, -priority, due, rowid) for rowid, priority, due in conn.execute(
                            "SELECT rowid, priority, due FROM sitq_jobs WHERE state = 'queued'"
                            " AND queue = ? ORDER BY priority DESC, due, rowid LIMIT ?",
                            (queue, limit - len(expired)),
                        )
                    ]
            picked.sort()
            rowids = json.dumps([rowid for *_, rowid in picked[:limit]])
        if rowids == "[]":
            return now, None
        conn.execute(_LEASE_ROWIDS, (now + lease, now, worker, rowids))
        text: str = conn.execute(_CLAIMED_JSON, (rowids,)).fetchone()[0]
        return now, text

    # ------------------------------------------------------------------ leases, finish
    async def _extend(self, jobs: list[Job], lease: float) -> list[LeaseState]:
        return await self._write(self._extend_tx, jobs, lease)

    def _extend_tx(
        self, conn: sqlite3.Connection, now: float, jobs: list[Job], lease: float
    ) -> list[LeaseState]:
        states: list[LeaseState] = []
        for job in jobs:
            row = conn.execute(
                f"UPDATE sitq_jobs SET lease_until = ? {_FENCE} RETURNING cancel_requested",
                (now + lease, job.id, job.attempt),
            ).fetchone()
            states.append("lost" if row is None else "cancel" if row[0] else "ok")
        return states

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
        return await self._write(self._finish_tx, items, ids, rows, b"".join(parts))

    def _finish_tx(
        self, conn: sqlite3.Connection, now: float, items: list[Finish], ids: str,
        success_rows: list[list[Any]], blob: bytes,
    ) -> list[bool]:
        # Fence the whole batch with one read: a job is finishable by the attempt that
        # holds its lease. Successes (the common case) then go in two set statements.
        live = json.loads(conn.execute(
            "SELECT json_group_object(id, attempt) FROM sitq_jobs"
            " WHERE id IN (SELECT value FROM json_each(?)) AND state = 'running'",
            (ids,),
        ).fetchone()[0])
        out = []
        done: list[list[Any]] = []
        results = []
        rows = iter(success_rows)
        for item in items:
            job = item.job
            ok = live.pop(job.id, None) == job.attempt  # pop: a second finish is refused
            out.append(ok)
            row = next(rows) if item.outcome == "success" and item.result is not None else None
            if not ok:
                continue
            if row is not None:
                done.append(row)
            elif item.outcome == "failed":
                conn.execute(
                    "UPDATE sitq_jobs SET state = 'failed', failures = ?, lease_until = NULL,"
                    " live_key = NULL, expires_at = ? WHERE id = ?",
                    (job.failures, now + item.ttl, job.id),
                )
                if item.result is not None:
                    results.append((job.id, job.queue, now + item.ttl, item.result))
            elif item.outcome == "retry":
                due = now + max(item.retry_delay, 0.0)
                conn.execute(
                    "UPDATE sitq_jobs SET state = ?, due = ?, eta = ?, failures = ?,"
                    " lease_until = NULL, worker = NULL WHERE id = ?",
                    ("scheduled" if due > now else "queued", due, due, job.failures, job.id),
                )
            else:  # release: due now, at its old place in the queue
                conn.execute(
                    "UPDATE sitq_jobs SET state = 'queued', eta = NULL, failures = ?,"
                    " due = min(due, ?), lease_until = NULL, worker = NULL WHERE id = ?",
                    (job.failures, now, job.id),
                )
        if done:
            text = json.dumps(done)
            conn.execute(
                "DELETE FROM sitq_jobs WHERE id IN (SELECT value->>0 FROM json_each(?))",
                (text,),
            )
            conn.execute(_PUT_RESULTS, (now, blob, text))
        if results:
            conn.executemany(_PUT_RESULT, results)
        self._purge_expired(conn, now)
        return out

    # ------------------------------------------------------------------ results, jobs
    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """A one-row read: on the event loop when possible, else on the thread."""
        done, value = self._inline_read(fn, *args)
        if done:
            return value  # type: ignore[return-value]
        return await self._run(fn, *args)

    async def _get_result(self, job_id: str) -> bytes | None:
        return await self._read(self._get_result_step, job_id)

    @staticmethod
    def _get_result_step(conn: sqlite3.Connection, job_id: str) -> bytes | None:
        row = conn.execute(
            "SELECT data FROM sitq_results WHERE id = ? AND expires_at > ?",
            (job_id, time.time()),
        ).fetchone()
        return None if row is None else row[0]

    async def _get_job(self, job_id: str) -> Job | None:
        return await self._read(self._get_job_step, job_id)

    @staticmethod
    def _get_job_step(conn: sqlite3.Connection, job_id: str) -> Job | None:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM sitq_jobs WHERE id = ?"
            " AND (state != 'failed' OR expires_at > ?)",
            (job_id, time.time()),
        ).fetchone()
        return None if row is None else _row_job(row)

    async def _cancel(self, job_id: str, result: bytes, ttl: float) -> CancelOutcome:
        return await self._write(self._cancel_tx, job_id, result, ttl)

    @staticmethod
    def _cancel_tx(
        conn: sqlite3.Connection, now: float, job_id: str, result: bytes, ttl: float
    ) -> CancelOutcome:
        row = conn.execute(
            "SELECT state, queue FROM sitq_jobs WHERE id = ?"
            " AND (state != 'failed' OR expires_at > ?)", (job_id, now),
        ).fetchone()
        if row is None or row[0] == "failed":
            found = conn.execute(
                "SELECT 1 FROM sitq_results WHERE id = ? AND expires_at > ?", (job_id, now)
            ).fetchone()
            return "finished" if found else "not_found"
        state, queue = row
        if state == "running":
            conn.execute("UPDATE sitq_jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return "requested"
        conn.execute("DELETE FROM sitq_jobs WHERE id = ?", (job_id,))
        conn.execute(_PUT_RESULT, (job_id, queue, now + ttl, result))
        return "cancelled"

    # ------------------------------------------------------------------ management
    async def _stats(self, queues: list[str] | None) -> dict[str, QueueStats]:
        return await self._run(self._stats_step, queues)

    @staticmethod
    def _stats_step(conn: sqlite3.Connection, queues: list[str] | None) -> dict[str, QueueStats]:
        now = time.time()
        out: dict[str, QueueStats] = {}
        # One indexed count per state (each state has its own partial index).
        for state, extra in (("queued", ""), ("running", ""), ("failed", " AND expires_at > ?"),
                             ("scheduled", "")):
            params: tuple[Any, ...] = (now, now) if extra else (now,)
            select = (
                "SELECT queue, count(*), sum(due <= ?) FROM sitq_jobs"
                f" WHERE state = '{state}'{extra}"
            )
            if queues is not None:
                select += f" AND queue IN ({','.join('?' * len(queues))})"
                params += tuple(queues)
            for queue, count, due in conn.execute(select + " GROUP BY queue", params):
                st = out.setdefault(queue, QueueStats())
                if state == "queued":
                    st.queued += count
                elif state == "running":
                    st.running += count
                elif state == "failed":
                    st.failed += count
                else:
                    st.queued += due or 0
                    st.scheduled += count - (due or 0)
        return out

    async def _purge(self, queues: list[str] | None) -> int:
        return await self._write(self._purge_tx, queues)

    @staticmethod
    def _purge_tx(conn: sqlite3.Connection, now: float, queues: list[str] | None) -> int:
        if queues is None:
            count = conn.execute("DELETE FROM sitq_jobs").rowcount
            conn.execute("DELETE FROM sitq_results")
            conn.execute("DELETE FROM sitq_ticks")
            return count
        marks = ",".join("?" * len(queues))
        count = 0
        for state in ("queued", "scheduled", "running", "failed"):
            count += conn.execute(
                f"DELETE FROM sitq_jobs WHERE state = '{state}' AND queue IN ({marks})", queues
            ).rowcount
        conn.execute(f"DELETE FROM sitq_results WHERE queue IN ({marks})", queues)
        conn.execute(f"DELETE FROM sitq_ticks WHERE queue IN ({marks})", queues)
        return count

    async def _claim_tick(self, name: str, tick: datetime, queue: str) -> bool:
        return await self._write(self._tick_tx, name, tick.timestamp(), queue)

    @staticmethod
    def _tick_tx(
        conn: sqlite3.Connection, now: float, name: str, tick: float, queue: str
    ) -> bool:
        return conn.execute(
            "INSERT OR IGNORE INTO sitq_ticks (queue, name, tick, claimed_at)"
            " VALUES (?, ?, ?, ?)",
            (queue, name, tick, now),
        ).rowcount == 1

    async def _dead_letters(self, queue: str, limit: int) -> list[Job]:
        return await self._run(self._dead_step, queue, limit)

    @staticmethod
    def _dead_step(conn: sqlite3.Connection, queue: str, limit: int) -> list[Job]:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM sitq_jobs WHERE state = 'failed' AND queue = ?"
            " AND expires_at > ? ORDER BY rowid LIMIT ?", (queue, time.time(), limit),
        ).fetchall()
        return [_row_job(row) for row in rows]

    async def _requeue(self, job_id: str) -> bool:
        return await self._write(self._requeue_tx, job_id)

    @staticmethod
    def _requeue_tx(conn: sqlite3.Connection, now: float, job_id: str) -> bool:
        row = conn.execute(
            "SELECT key, queue FROM sitq_jobs WHERE id = ? AND state = 'failed'"
            " AND expires_at > ?",
            (job_id, now),
        ).fetchone()
        if row is None:
            return False
        key, queue = row
        if key is not None and conn.execute(
            "SELECT 1 FROM sitq_jobs WHERE queue = ? AND live_key = ?", (queue, key)
        ).fetchone():
            key = None  # another live job holds the key now; this one runs without it
        conn.execute("DELETE FROM sitq_results WHERE id = ?", (job_id,))
        conn.execute(
            "UPDATE sitq_jobs SET state = 'queued', failures = 0, lease_expiries = 0,"
            " eta = NULL, due = ?, cancel_requested = 0, expires_at = NULL, live_key = ?,"
            " lease_until = NULL, worker = NULL WHERE id = ?",
            (now, key, job_id),
        )
        return True

