"""PostgresBackend: sitq on PostgreSQL through asyncpg.

* **Claims** are one statement per batch: ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP
  LOCKED LIMIT n) ... RETURNING`` (``_sql.Statements.claim``). Claimers never wait for
  each other and never share a job. Due-ness, leases and result expiry follow the
  server's ``now()``, never a worker's clock.
* **Wake-ups**: every statement that makes jobs due or finishes them sends a NOTIFY in
  the same statement (delivered on commit). One listening connection per backend
  (:mod:`._listener`) wakes idle workers and ``get_result`` waiters; polling is the
  safety net (a worker looks at least every second, a result waiter every
  ``SAFETY_LOOK`` seconds, and both poll while the listener is reconnecting).
* **Transactional enqueue**: ``queue.options(connection=conn).enqueue(...)`` runs the
  insert (and its NOTIFY) on the caller's asyncpg or psycopg connection, inside the
  caller's transaction.
* **Faults**: a step that meets a lost connection (a restart, a reset) is tried again
  on a fresh one, twice, within ~0.3 s, then raises :class:`BackendUnavailable`. That is
  safe: an enqueue is idempotent by job id, a repeated claim only delays the jobs of the
  lost reply until their lease expires, and a finish whose reply was lost is recognised
  when it is sent again (the attempt is already in the state it was finished to).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar

import asyncpg

from sitq.backend import Backend, CancelOutcome, Finish, LeaseState, QueueStats
from sitq.errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    NotSupported,
    SitqError,
)
from sitq.job import Job

from ._listener import Listener
from ._schema import migrate
from ._sql import Statements
from ._url import parse_url, safe_url

__all__ = ["PostgresBackend"]

log = logging.getLogger("sitq.postgres")

#: A result waiter looks at the store at least this often (seconds), whatever happens
#: to notifications (a listener that is reconnecting, a notification queue that is full).
SAFETY_LOOK = 1.0
#: How long (seconds) a first wait gives the listening connection to come up.
LISTEN_WAIT = 2.0
#: Rows deleted per statement when pruning expired results and dead letters.
PRUNE_BATCH = 5000
#: Claimed cron ticks are kept this long (seconds), far beyond any misfire grace.
TICK_RETENTION = 7 * 24 * 3600.0
#: Tries of a step that meets a lost connection, and the pause before each retry.
_RETRY_PAUSES = (0.05, 0.25)

_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    # "connection is closed", "connection was closed in the middle of operation"
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


async def _no_reset(_conn: Any) -> None:
    """Pool release without asyncpg's default reset query (a round trip per release):
    sitq's statements leave no session state behind, and asyncpg still rolls back a
    transaction left open."""


def _headers(headers: dict[str, str]) -> str | None:
    return json.dumps(headers) if headers else None


def _job(row: Any, state: Any = None) -> Job:
    headers = row["headers"]
    return Job(
        id=row["id"],
        queue=row["queue"],
        task=row["task"],
        payload=row["payload"],
        serializer=row["serializer"],
        headers=json.loads(headers) if headers else {},
        priority=row["priority"],
        eta=row["eta"],
        attempt=row["attempt"],
        failures=row["failures"],
        lease_expiries=row["lease_expiries"],
        max_retries=row["max_retries"],
        timeout=row["timeout"],
        key=row["key"],
        result_ttl=row["result_ttl"],
        created_at=row["created_at"],
        chain=row["chain"],
        state=state or row["state"],
        lease_until=row["lease_until"],
        worker=row["worker"],
        started_at=row["started_at"],
        cancel_requested=row["cancel_requested"],
    )


def _insert_params(job: Job) -> tuple[Any, ...]:
    """The 14 parameters of ``enqueue_one`` (and one row of ``enqueue_many``)."""
    return (
        job.id, job.queue, job.priority, job.eta, job.max_retries, job.timeout,
        job.result_ttl, job.created_at, job.key, job.serializer, job.task,
        _headers(job.headers), job.payload, job.chain,
    )


class PostgresBackend(Backend):
    """PostgreSQL backend. ``PostgresBackend("postgresql://user@host:5432/db")``.

    Keyword options (also ``?name=value`` in the URL): ``schema`` (default ``sitq``),
    ``migrate`` (default True: migrate on connect), ``min_size``/``max_size`` (the pool,
    default 1/10), ``command_timeout`` (default 30 s), ``connect_timeout`` (5 s),
    ``prune_interval`` (60 s), ``keepalive`` (15 s), ``result_ttl``. Other keywords go to
    ``asyncpg.create_pool`` (e.g. ``ssl=``, ``server_settings=``).
    """

    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")
    supports_notifications: ClassVar[bool] = True
    supports_transactions: ClassVar[bool] = True
    supports_dead_letters: ClassVar[bool] = True
    #: While the listener is down, an idle worker looks this often (seconds).
    poll_interval: ClassVar[float] = 0.5

    def __init__(
        self,
        url: str = "postgresql://localhost:5432/postgres",
        *,
        result_ttl: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(result_ttl=result_ttl, url=url)
        self._dsn, self.options = parse_url(url, dict(options))
        self.safe_url = safe_url(url)
        self.schema = self.options.schema
        self._sql = Statements(self.schema)
        self._pool: Any = None
        self._listener: Listener | None = None
        self._pruner: asyncio.Task[None] | None = None
        #: Per tuple of queues: the listener's ``seq`` when the last claim began.
        self._marks: dict[tuple[str, ...], int] = {}
        #: Per queue: when (monotonic) a job this backend retried or delayed falls due.
        self._due: dict[str, float] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresBackend:
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"<PostgresBackend {self.safe_url} schema={self.schema}>"

    # ------------------------------------------------------------------ errors
    def _error(self, what: str, exc: BaseException) -> BackendError:
        if _unavailable(exc):
            return BackendUnavailable(
                f"PostgreSQL at {self.safe_url} is unreachable during {what}: "
                f"{exc or type(exc).__name__}. Check that the server is running and that the "
                "URL (host, port, user, password, database) is right"
            )
        return BackendError(f"PostgreSQL at {self.safe_url} failed during {what}: {exc}")

    async def _run(self, what: str, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await call(*args)`` through the pool, tried again on a fresh connection when
        it meets a lost one; asyncpg's errors become sitq's."""
        for pause in (*_RETRY_PAUSES, None):
            try:
                return await call(*args)
            except SitqError:
                raise
            except Exception as exc:
                if pause is None or not _unavailable(exc) or self._pool is None:
                    raise self._error(what, exc) from exc
                log.debug("%s: %s; trying again on a fresh connection", what, exc)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    def _once(
        self, fetch: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """``fetch`` on the caller's connection: never tried again (a lost connection
        took the caller's transaction with it), only its errors become sitq's."""

        async def call(sql: str, *args: Any) -> Any:
            try:
                return await fetch(sql, *args)
            except SitqError:
                raise
            except Exception as exc:
                if _unavailable(exc) or isinstance(exc, asyncpg.PostgresError):
                    raise self._error("enqueue(connection=...)", exc) from exc
                if type(exc).__module__.split(".")[0] == "psycopg":
                    raise BackendError(
                        f"PostgreSQL failed during enqueue(connection=...): {exc}"
                    ) from exc
                raise

        return call

    # ------------------------------------------------------------------ connection
    def _connect_kwargs(self) -> dict[str, Any]:
        return {"timeout": self.options.connect_timeout, **self.options.connect_options}

    async def _connect(self) -> None:
        opts = self.options
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=opts.min_size, max_size=opts.max_size,
                command_timeout=opts.command_timeout, reset=_no_reset,
                **self._connect_kwargs(),
            )
            async with self._pool.acquire() as conn:
                await migrate(conn, self.schema, self.safe_url, apply=opts.migrate,
                              log=log.info)
        except BackendError:
            raise
        except Exception as exc:
            raise self._error("connect", exc) from exc

    async def _open_listener_connection(self) -> Any:
        return await asyncpg.connect(self._dsn, **self._connect_kwargs())

    def _the_listener(self) -> Listener:
        if self._listener is None:
            self._listener = Listener(
                self._open_listener_connection, self._sql.jobs_channel,
                self._sql.done_channel, keepalive=self.options.keepalive,
                where=self.safe_url,
            )
        return self._listener

    async def _close(self) -> None:
        tasks = [t for t in (self._pruner,) if t is not None]
        self._pruner = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except Exception:  # a connection still busy (a query without answer)
                pool.terminate()

    # ------------------------------------------------------------------ producing
    async def _enqueue_one(self, job: Job) -> str:
        row = await self._run("enqueue", self._pool.fetchrow, self._sql.enqueue_one,
                              *_insert_params(job))
        self._note_due(job)
        if row["id"] is not None:
            return str(row["id"])
        return await self._settle([job], self._pool.fetch, "enqueue")

    async def _enqueue(self, jobs: list[Job]) -> list[str]:
        columns = list(zip(*map(_insert_params, jobs), strict=True))
        row = await self._run("enqueue_many", self._pool.fetchrow, self._sql.enqueue_many,
                              *columns)
        for job in jobs:
            self._note_due(job)
        if row["inserted"] == len(jobs):
            return [job.id for job in jobs]
        return await self._settle_many(jobs, self._pool.fetch, "enqueue_many")

    async def _settle(
        self, jobs: list[Job], fetch: Callable[..., Awaitable[Any]], what: str
    ) -> str:
        return (await self._settle_many(jobs, fetch, what))[0]

    async def _settle_many(
        self, jobs: list[Job], fetch: Callable[..., Awaitable[Any]], what: str
    ) -> list[str]:
        """Ids for jobs of which some were not inserted: the job's own id where it exists
        (inserted now, or by an earlier send), else the live holder of its key."""
        sql = self._sql
        rows = await self._run(what, fetch, sql.existing, [job.id for job in jobs])
        present = {row[0] for row in rows}
        out = []
        for job in jobs:
            if job.id in present or job.key is None:
                out.append(job.id)
                continue
            for _ in range(5):
                holder = await self._run(what, fetch, sql.key_holder, job.queue, job.key)
                if holder:
                    out.append(holder[0][0])
                    break
                # The holder finished in between: the key is free, insert this one.
                inserted = await self._run(what, fetch, sql.enqueue_many,
                                           *([value] for value in _insert_params(job)))
                if inserted[0][0]:
                    out.append(job.id)
                    break
            else:
                raise BackendError(f"could not settle idempotency key {job.key!r} of queue "
                                   f"{job.queue!r}: its holder keeps changing")
        return out

    def _note_due(self, job: Job) -> None:
        """Remember when a job with an ETA falls due, for this process's idle workers."""
        if job.eta is not None:
            self._remember_due(job.queue, job.eta.timestamp() - time.time())

    def _remember_due(self, queue: str, delay: float) -> None:
        if delay > 0:
            at = time.monotonic() + delay
            self._due[queue] = min(self._due.get(queue, at), at)

    async def _enqueue_in_transaction(self, jobs: list[Job], connection: Any) -> list[str]:
        fetch = self._once(_transaction_fetch(connection))
        columns = list(zip(*map(_insert_params, jobs), strict=True))
        rows = await self._run("enqueue(connection=...)", fetch, self._sql.enqueue_many,
                               *columns)
        for job in jobs:
            self._note_due(job)
        if rows[0][0] == len(jobs):
            return [job.id for job in jobs]
        return await self._settle_many(jobs, fetch, "enqueue(connection=...)")

    # ------------------------------------------------------------------ consuming
    async def _claim(self, queues: list[str], limit: int, lease: float, worker: str) -> list[Job]:
        listener = self._listener
        if listener is None:  # the first claim: a worker. Listen, and prune now and then.
            listener = self._the_listener()
            await listener.listen(self._sql.jobs_channel, LISTEN_WAIT)
            if self.options.prune_interval and self._pruner is None:
                self._pruner = asyncio.create_task(self._prune_loop(), name="sitq-postgres-prune")
        self._marks[tuple(queues)] = listener.seq
        rows = await self._run("claim", self._pool.fetch, self._sql.claim(len(queues)),
                               limit, lease, worker, *queues)
        if len(rows) > 1:
            rows = sorted(rows, key=lambda r: (not r["late"], -r["priority"], r["due"], r["id"]))
        return [_job(row, "running") for row in rows]

    async def _wait_for_jobs(self, queues: list[str], timeout: float) -> None:
        listener = self._the_listener()
        if not await listener.listen(self._sql.jobs_channel, LISTEN_WAIT):
            timeout = min(timeout, self.poll_interval)
        mark = self._marks.get(tuple(queues))
        if mark is not None and listener.notified_since(mark, queues):
            return  # jobs arrived while the last claim ran
        now = time.monotonic()
        for queue in queues:
            at = self._due.get(queue)
            if at is not None:
                if at <= now:
                    del self._due[queue]
                    return
                timeout = min(timeout, at - now)
        fut = listener.job_waiter(queues)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            listener.drop_job_waiter(fut)

    async def _extend(self, jobs: list[Job], lease: float) -> list[LeaseState]:
        rows = await self._run("extend", self._pool.fetch, self._sql.extend,
                               [j.id for j in jobs], [j.attempt for j in jobs], lease)
        found = {(r["id"], r["attempt"]): r["cancel_requested"] for r in rows}
        out: list[LeaseState] = []
        for job in jobs:
            cancel = found.get((job.id, job.attempt))
            out.append("lost" if cancel is None else "cancel" if cancel else "ok")
        return out

    async def _finish(self, items: list[Finish]) -> list[bool]:
        ids = [item.job.id for item in items]
        attempts = [item.job.attempt for item in items]
        outcomes = [item.outcome for item in items]
        row = await self._run(
            "finish", self._pool.fetchrow, self._sql.finish, ids, attempts, outcomes,
            [item.result for item in items], [item.ttl for item in items],
            [item.retry_delay for item in items], [item.job.failures for item in items],
        )
        recorded = set(row["ids"] or ())
        if len(recorded) < len(items):
            # A send that was repeated after a lost reply finds its attempts finished.
            states = ["queued" if o in ("retry", "release") else o for o in outcomes]
            rows = await self._run("finish", self._pool.fetch, self._sql.finished_already,
                                   ids, attempts, states)
            recorded.update(r["id"] for r in rows)
        for item in items:
            if item.outcome == "retry":
                self._remember_due(item.job.queue, item.retry_delay)
        return [job_id in recorded for job_id in ids]

    # ------------------------------------------------------------------ results
    async def _get_result(self, job_id: str) -> bytes | None:
        data = await self._run("get_result", self._pool.fetchval, self._sql.get_result, job_id)
        return None if data is None else bytes(data)

    async def _wait_result(self, job_id: str, timeout: float | None) -> bytes | None:
        listener = self._the_listener()
        listening = await listener.listen(self._sql.done_channel, LISTEN_WAIT)
        deadline = None if timeout is None else time.monotonic() + timeout
        fut = listener.result_waiter(job_id)  # before looking: nothing slips in between
        try:
            while True:
                data = await self._get_result(job_id)
                if data is not None:
                    return data
                wait = SAFETY_LOOK if listening else self.poll_interval
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    wait = min(wait, remaining)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), wait)
                if fut.done():
                    listener.drop_result_waiter(job_id, fut)
                    fut = listener.result_waiter(job_id)
                listening = listener.up
        finally:
            listener.drop_result_waiter(job_id, fut)

    # ------------------------------------------------------------------ management
    async def _get_job(self, job_id: str) -> Job | None:
        row = await self._run("get_job", self._pool.fetchrow, self._sql.get_job, job_id)
        return None if row is None else _job(row)

    async def _cancel(self, job_id: str, result: bytes, ttl: float) -> CancelOutcome:
        outcome: CancelOutcome = await self._run(
            "cancel", self._cancel_in_transaction, job_id, result, ttl
        )
        return outcome

    async def _cancel_in_transaction(self, job_id: str, result: bytes, ttl: float) -> CancelOutcome:
        sql = self._sql
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql.cancel_lock, job_id)
            if row is None:
                return "not_found"
            if row["state"] == "queued":
                await conn.execute(sql.cancel_queued, job_id, result, ttl)
                return "cancelled"
            if row["state"] == "running":
                await conn.execute(sql.cancel_running, job_id)
                return "requested"
            return "finished" if row["alive"] else "not_found"

    async def _stats(self, queues: list[str] | None) -> dict[str, QueueStats]:
        args = () if queues is None else (queues,)
        rows = await self._run("stats", self._pool.fetch, self._sql.stats(queues is not None),
                               *args)
        return {
            r["queue"]: QueueStats(queued=r["queued"], scheduled=r["scheduled"],
                                   running=r["running"], failed=r["failed"])
            for r in rows
        }

    async def _purge(self, queues: list[str] | None) -> int:
        args = () if queues is None else (queues,)
        row = await self._run("purge", self._pool.fetchrow, self._sql.purge(queues is not None),
                              *args)
        for queue in queues if queues is not None else list(self._due):
            self._due.pop(queue, None)
        return int(row["jobs"])

    async def _claim_tick(self, name: str, tick: datetime, queue: str) -> bool:
        won = await self._run("claim_tick", self._pool.fetchval, self._sql.claim_tick,
                              queue, name, tick)
        return bool(won)

    async def _dead_letters(self, queue: str, limit: int) -> list[Job]:
        rows = await self._run("dead_letters", self._pool.fetch, self._sql.dead_letters,
                               queue, limit)
        return [_job(row) for row in rows]

    async def _requeue(self, job_id: str) -> bool:
        row = await self._run("requeue", self._pool.fetchrow, self._sql.requeue, job_id)
        return bool(row["requeued"])

    # ------------------------------------------------------------------ pruning
    async def prune(self) -> int:
        """Delete finished jobs whose result has expired (results, dead letters, cancelled
        jobs) and cron ticks older than 7 days. Returns the number of jobs deleted.

        A backend that claims jobs does this every ``prune_interval`` seconds by itself."""
        await self.connect()
        total = 0
        while True:
            deleted = await self._run("prune", self._pool.fetchval, self._sql.prune_jobs,
                                      PRUNE_BATCH)
            total += deleted
            if deleted < PRUNE_BATCH:
                break
        await self._run("prune", self._pool.execute, self._sql.prune_ticks, TICK_RETENTION)
        return total

    async def _prune_loop(self) -> None:
        interval = self.options.prune_interval
        while True:
            await asyncio.sleep(interval)
            try:
                deleted = await self.prune()
            except BackendError as exc:
                log.warning("pruning expired jobs failed (%s); trying again in %.0fs",
                            exc, interval)
            else:
                if deleted:
                    log.debug("pruned %d expired job(s)", deleted)


# ---------------------------------------------------------------------- transactions
_PLACEHOLDER = re.compile(r"\$(\d+)")


def _transaction_fetch(connection: Any) -> Callable[..., Awaitable[list[Sequence[Any]]]]:
    """A ``fetch(sql, *args)`` running on the caller's connection, which must be inside
    an open transaction: asyncpg's ``Connection`` (or a pool's), or psycopg 3's
    ``AsyncConnection`` / ``Connection``."""
    module = type(connection).__module__.split(".")[0]
    if module == "asyncpg" or hasattr(connection, "is_in_transaction"):
        if not connection.is_in_transaction():
            raise ConfigurationError(
                "enqueue(connection=conn) needs conn inside an open transaction (else the "
                "job would be committed on its own): async with conn.transaction(): ..."
            )
        return connection.fetch  # type: ignore[no-any-return]
    if module == "psycopg":
        from psycopg.pq import TransactionStatus

        if connection.autocommit and connection.info.transaction_status == TransactionStatus.IDLE:
            raise ConfigurationError(
                "enqueue(connection=conn) needs conn inside an open transaction (else the "
                "job would be committed on its own): with conn.transaction(): ... "
                "(or a connection with autocommit off)"
            )
        if asyncio.iscoroutinefunction(connection.execute):

            async def fetch_async(sql: str, *args: Any) -> list[Sequence[Any]]:
                cursor = await connection.execute(*_psycopg(sql, args))
                return await cursor.fetchall()  # type: ignore[no-any-return]

            return fetch_async

        async def fetch_sync(sql: str, *args: Any) -> list[Sequence[Any]]:
            return connection.execute(*_psycopg(sql, args)).fetchall()  # type: ignore[no-any-return]

        return fetch_sync
    raise NotSupported(
        f"enqueue(connection=...) takes an asyncpg connection or a psycopg 3 connection, "
        f"got {type(connection).__module__}.{type(connection).__qualname__}. With "
        "SQLAlchemy, pass the driver's connection (see docs/backends/postgres.md)"
    )


def _psycopg(sql: str, args: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    """asyncpg's ``$n`` placeholders as psycopg's named ones."""
    return _PLACEHOLDER.sub(r"%(p\1)s", sql), {f"p{i}": v for i, v in enumerate(args, 1)}
