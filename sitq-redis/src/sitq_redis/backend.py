"""RedisBackend: sitq on Redis (standalone or Cluster) through redis-py's asyncio client.

Every state change is one Lua script (:mod:`sitq_redis._scripts`) run atomically on the
server, touching the keys of one queue only; those keys share the hash tag
``{<prefix>:<queue>}`` so a queue lives on one Cluster slot::

    {p:q}:ready   ZSET  due jobs; score -priority, member %012x(order) + id
    {p:q}:sched   ZSET  jobs waiting for their eta (or retry back-off); score eta ms
    {p:q}:run     ZSET  leased jobs; score lease deadline ms
    {p:q}:dead    ZSET  failed jobs kept as dead letters; score expiry ms
    {p:q}:res     ZSET  ids with a stored result; score expiry ms (index for purge)
    {p:q}:keys    HASH  idempotency key -> id of the live job holding it
    {p:q}:ticks   ZSET  claimed cron ticks of schedules enqueueing into q; member
                        <schedule>:<tick ms>, score tick ms (kept 7 days)
    {p:q}:j:<id>  HASH  the job (see _scripts for the fields)
    {p:q}:r:<id>  STR   the result bytes, with a TTL
    p:queues      SET   queue names (for stats/purge of every queue, and id lookups)
    p:marker      STR   a token identifying this dataset (data-loss detection)

Channels: ``p:done:<id>`` carries a job's result bytes when it finishes;
``p:new:<queue>`` says "jobs may be due" to idle workers.

Operations by job id alone (``get_result``, ``cancel``, ``get_job``) need the job's queue
to find its keys. The backend remembers the queue of every id it enqueued or claimed;
for an id it has not seen it looks in every queue of ``p:queues`` (a request per
queue). Result waits need no lookup: the result arrives on the ``done`` channel.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from sitq.backend import Backend, CancelOutcome, Finish, LeaseState, QueueStats
from sitq.errors import BackendError, BackendUnavailable, ConfigurationError
from sitq.job import Job

from . import _scripts
from ._notify import Notifier
from ._records import (
    _dt,
    _entries,
    _entry,
    _job_from_hash,
    _Keys,
    _ms,
    _pack,
    _packb,
    _plain,
    _plain_command,
    _resp_args,
    _unpack,
)
from ._url import _redis_url

__all__ = ["DataLost", "RedisBackend"]

log = logging.getLogger("sitq.redis")

_TICK_TTL_MS = 7 * 24 * 3600 * 1000
_LEASE_STATES: tuple[LeaseState, ...] = ("lost", "ok", "cancel")
_OUTCOME = {"success": "s", "failed": "f", "retry": "r", "release": "l"}
_WHERE_MAX = 50_000
#: Jobs per script call when a big batch is streamed over one connection.
_SUB_BATCH = 250
#: A result waiter looks at the store at least this often (seconds), whatever happens to
#: the notification (a subscription an ACL refuses, a message lost in a failover).
_SAFETY_LOOK = 5.0
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class DataLost(BackendError):
    """The Redis server lost its data since this client last saw it (a restart without
    persistence, a failover to an empty replica, a FLUSHALL): jobs and results written
    before are gone. Raised once, by the first operation that notices; later operations
    proceed on the new (empty) dataset."""


class _LossSignal(rexc.RedisError):
    """Raised inside redis-py's connect step so the command is not sent (and, not being
    a ConnectionError, not retried)."""


class _Errors:
    """Turns redis-py exceptions into sitq's (``BackendUnavailable`` for a lost or silent
    connection) around one operation, and registers the operation with the backend's
    watchdog, which cancels it after ``command_timeout`` (a blackholed connection would
    otherwise hang forever; a per-call ``asyncio.timeout`` costs more on the hot path)."""

    __slots__ = ("backend", "task", "what")

    def __init__(self, backend: RedisBackend, what: str) -> None:
        self.backend = backend
        self.what = what
        self.task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> None:
        self.enter()

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self.leave(kind, exc)

    def enter(self) -> None:
        """What ``async with`` does on entry (a hot path calls it without the coroutine)."""
        backend = self.backend
        if backend.command_timeout:
            task = self.task = asyncio.current_task()
            if task is not None:
                backend._inflight[self] = time.monotonic()
                if backend._watchdog is None:
                    backend._start_watchdog()

    def leave(self, kind: Any, exc: Any) -> None:
        """What ``async with`` does on exit: raises sitq's error for a redis-py one."""
        backend = self.backend
        if self.task is not None:
            backend._inflight.pop(self, None)
            if self in backend._expired:
                backend._expired.discard(self)
                if kind is asyncio.CancelledError:
                    self.task.uncancel()
                    exc = rexc.TimeoutError(
                        f"no answer within command_timeout={backend.command_timeout}s"
                    )
        if exc is None or not isinstance(
            exc, rexc.RedisError | rexc.RedisClusterException | OSError
        ):
            return
        where = backend.safe_url
        if isinstance(exc, _LossSignal):
            raise DataLost(str(exc)) from exc
        # A cluster none of whose nodes answers raises RedisClusterException on connect.
        unreachable = self.what == "connect" and isinstance(exc, rexc.RedisClusterException)
        if unreachable or isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
            raise BackendUnavailable(
                f"Redis at {where} is unreachable during {self.what}: "
                f"{exc or type(exc).__name__}. Check that the server is running and that "
                "the URL (host, port, password, TLS) is right"
            ) from exc
        raise BackendError(f"Redis at {where} failed during {self.what}: {exc}") from exc


class _Script:
    def __init__(self, source: str) -> None:
        import hashlib

        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisBackend(Backend):
    """Redis backend. ``RedisBackend.from_url("redis://localhost:6379/0")``.

    ``prefix`` namespaces every key (default ``sitq``); ``cluster`` is ``"auto"`` (ask the
    server), ``True`` or ``False``; other keyword arguments go to redis-py's client.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "redis+unix")
    supports_notifications: ClassVar[bool] = True
    supports_dead_letters: ClassVar[bool] = True

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "sitq",
        cluster: bool | str = "auto",
        command_timeout: float | None = 30.0,
        result_ttl: float | None = None,
        client: Any = None,
        **client_options: Any,
    ) -> None:
        super().__init__(result_ttl=result_ttl, url=url)
        if not prefix or any(c in prefix for c in "{}"):
            raise ConfigurationError(f"prefix must be a non-empty string without braces, "
                                     f"got {prefix!r}")
        self.prefix = prefix
        self.cluster: bool | str = cluster
        self.command_timeout = command_timeout
        self._redis_url, self.safe_url = _redis_url(url)
        self._client_options = client_options
        self._client: Any = client
        self._owns_client = client is None
        self._is_cluster = isinstance(client, RedisCluster)
        self._keys: dict[str, _Keys] = {}
        self._where: dict[str, str] = {}
        self._registered: set[str] = set()
        self._marker: bytes | None = None
        self._token = os.urandom(12).hex().encode()
        self._notifier: Notifier | None = None
        #: The producer's own connection (standalone servers): single enqueues go over it
        #: without a trip through the pool; ``_conn_busy`` while one is on it.
        self._conn: Any = None
        self._conn_busy = False
        #: Per queue: the start of an ENQUEUE_PLAIN call in the Redis protocol; and the
        #: client's string encoding (see ``_plain_head``).
        self._heads: dict[str, bytes] = {}
        self._encoding = ("utf-8", "strict")
        self._jobs_event: asyncio.Event | None = None
        self._job_channels: set[bytes] = set()
        self._next_due: float | None = None
        self._queues_key = f"{prefix}:queues"
        self._marker_key = f"{prefix}:marker"
        self._done = f"{prefix}:done:"
        self._scripts = {
            name: _Script(getattr(_scripts, name))
            for name in ("ENQUEUE_PLAIN", "ENQUEUE", "CLAIM", "EXTEND", "FINISH", "CANCEL",
                         "STATS", "PURGE", "DEAD", "REQUEUE")
        }
        self.data_loss_events = 0
        self._inflight: dict[_Errors, float] = {}
        self._expired: set[_Errors] = set()
        self._watchdog: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {"prefix", "cluster", "command_timeout"}
        for name, value in query:
            if name == "prefix":
                options.setdefault("prefix", value)
            elif name == "command_timeout":
                try:
                    options.setdefault("command_timeout", float(value) or None)
                except ValueError:
                    raise ConfigurationError(
                        f"command_timeout= in {url!r} must be seconds, got {value!r}"
                    ) from None
            elif name == "cluster":
                low = value.lower()
                if low not in (*_TRUE, *_FALSE, "auto"):
                    raise ConfigurationError(
                        f"cluster= in {url!r} must be auto, true or false, got {value!r}"
                    )
                options.setdefault("cluster", "auto" if low == "auto" else low in _TRUE)
        rest = urlencode([(k, v) for k, v in query if k not in ours])
        base = url.split("?", 1)[0]
        return cls(f"{base}?{rest}" if rest else base, **options)

    def __repr__(self) -> str:
        return f"<RedisBackend {self.safe_url}>"

    # ------------------------------------------------------------------ connection
    def _options(self) -> dict[str, Any]:
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        # A command that meets a dead connection (a server restart, a reset) is sent again
        # on a fresh one, twice at most, within ~0.3 s; then BackendUnavailable. Enqueue
        # is idempotent by job id, a repeated claim only delays the jobs of the lost reply
        # until their lease expires, and a repeated finish is fenced.
        opts: dict[str, Any] = {
            "socket_connect_timeout": 5.0,
            "retry": Retry(ExponentialBackoff(cap=0.25, base=0.05), 2),
            "retry_on_error": [rexc.ConnectionError, rexc.TimeoutError],
        }
        query = dict(parse_qsl(urlsplit(self._redis_url).query))
        for name in list(opts):
            if name in query:
                del opts[name]
        opts.update(self._client_options)
        return opts

    async def _connect(self) -> None:
        async with _Errors(self, "connect"):
            if self._client is None:
                self._client = await self._make_client()
            await self._check_marker(None)

    async def _make_client(self) -> Any:
        opts = self._options()
        want = self.cluster
        if want is True:
            self._is_cluster = True
            return RedisCluster.from_url(self._redis_url, **opts)
        client = aioredis.Redis.from_url(
            self._redis_url, redis_connect_func=self._on_connection, **opts
        )
        if want == "auto":
            try:
                info = await client.info("cluster")
            except rexc.ResponseError:
                info = {}
            if info.get("cluster_enabled") in (1, "1"):
                await client.aclose()
                self._is_cluster = True
                return RedisCluster.from_url(self._redis_url, **opts)
        return client

    async def _on_connection(self, conn: Any) -> None:
        """Runs on every new connection: a changed or missing marker means data loss."""
        await conn.on_connect()
        await conn.send_command("GET", self._marker_key)
        await self._check_marker(await conn.read_response(), conn)

    async def _check_marker(self, value: bytes | None, conn: Any = None) -> None:
        if self._is_cluster:
            if self._marker is None:
                self._marker = self._token
                await self._client.set(self._marker_key, self._token, nx=True)
            return
        if conn is None:
            if self._marker is None:
                value = await self._client.get(self._marker_key)
                if value is None:
                    await self._client.set(self._marker_key, self._token, nx=True)
                    value = await self._client.get(self._marker_key)
                self._marker = value
            return
        if self._marker is None or value == self._marker:
            return
        if value is None:
            await conn.send_command("SET", self._marker_key, self._token, "NX")
            await conn.read_response()
            await conn.send_command("GET", self._marker_key)
            value = await conn.read_response()
        self._marker, lost_since = value, self._marker
        self.data_loss_events += 1
        self._where.clear()
        self._registered.clear()
        message = (
            f"Redis at {self.safe_url} lost its data: the dataset marker {lost_since!r} is "
            "gone (the server restarted without persistence, failed over to an empty "
            "replica, or was flushed). Jobs and results stored before are lost. Enable AOF "
            "(appendonly yes) to keep them across restarts"
        )
        log.error(message)
        raise _LossSignal(message)

    def _start_watchdog(self) -> None:
        self._watchdog = asyncio.get_running_loop().create_task(
            self._watch(), name="sitq-redis-watchdog"
        )

    async def _watch(self) -> None:
        """Cancel operations running longer than ``command_timeout``."""
        limit = float(self.command_timeout or 0)
        step = min(1.0, limit / 4)
        while True:
            await asyncio.sleep(step)
            cutoff = time.monotonic() - limit
            for op, started in list(self._inflight.items()):
                if started < cutoff and op.task is not None and not op.task.done():
                    del self._inflight[op]
                    self._expired.add(op)
                    op.task.cancel()

    async def _close(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        if self._notifier is not None:
            await self._notifier.close()
            self._notifier = None
        self._jobs_event = None
        self._job_channels.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.disconnect()
            except Exception:
                pass
        if self._client is not None and self._owns_client:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except Exception:
                pass

    async def _pubsub_connection(self) -> Any:
        client = self._client
        if self._is_cluster:
            node = client.get_default_node() or client.get_random_node()
            kwargs = dict(node.connection_kwargs)
            conn_class = node.connection_class
        else:
            pool = client.connection_pool
            kwargs = dict(pool.connection_kwargs)
            conn_class = pool.connection_class
        kwargs.pop("redis_connect_func", None)
        kwargs["socket_timeout"] = None
        conn = conn_class(**kwargs)
        await conn.connect()
        return conn

    def _connection(self) -> Any:
        """A connection like the client's pool makes (same class and settings, so a new
        one runs the data-loss check too), but outside the pool; it connects on first use."""
        pool = self._client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def _notify(self) -> Notifier:
        if self._notifier is None:
            self._notifier = Notifier(self._pubsub_connection)
        return self._notifier

    # ------------------------------------------------------------------ helpers
    def _k(self, queue: str) -> _Keys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = _Keys(self.prefix, queue)
        return keys

    def _remember(self, job_id: str, queue: str) -> None:
        where = self._where
        if len(where) >= _WHERE_MAX:
            for old in list(itertools.islice(where, _WHERE_MAX // 2)):
                del where[old]
        where[job_id] = queue

    def _remember_all(self, ids: list[str], queue: str) -> None:
        """``_remember`` for a batch of one queue's ids."""
        where = self._where
        if len(where) + len(ids) > _WHERE_MAX:
            drop = len(where) + len(ids) - _WHERE_MAX // 2
            for old in list(itertools.islice(where, drop)):
                del where[old]
        where.update(dict.fromkeys(ids, queue))

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._scripts[name]
        client = self._client
        try:
            return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            return await client.eval(script.source, len(keys), *keys, *args)

    async def _gather(self, calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run several scripts: one pipelined round trip on a standalone server."""
        if len(calls) == 1:
            return [await self._run(*calls[0])]
        if self._is_cluster:
            return list(await asyncio.gather(*(self._run(*c) for c in calls)))
        try:
            pipe = self._client.pipeline(transaction=False)
            for name, keys, args in calls:
                pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
            return list(await pipe.execute())
        except rexc.NoScriptError:
            return [await self._run(*c) for c in calls]

    async def _locate(self, job_id: str) -> list[str]:
        """Queues that may hold ``job_id``: the remembered one, else every known queue."""
        queue = self._where.get(job_id)
        if queue is not None:
            return [queue]
        members = await self._client.smembers(self._queues_key)
        return sorted(m.decode() for m in members)

    # ------------------------------------------------------------------ producing
    async def _enqueue_one(self, job: Job) -> str:
        """One job: a plain job (see ``_plain``) of a known queue goes over the producer's
        own connection; any other straight to the script (no list, no grouping)."""
        if (job.eta is None and job.key is None and not job.priority
                and job.result_ttl is None and job.queue in self._registered):
            return await self._enqueue_plain(job)
        return (await self._enqueue([job]))[0]

    async def _enqueue_plain(self, job: Job) -> str:
        """A plain job of a registered queue: ENQUEUE_PLAIN, over ``_conn`` when it is free
        (a dead connection or a missing script: once more the usual way, which retries;
        enqueue is idempotent by job id)."""
        k = self._k(job.queue)
        guard = _Errors(self, "enqueue")
        guard.enter()
        try:
            if self._conn_busy or self._is_cluster:
                await self._run_plain(k, job)
            else:
                self._conn_busy = True
                try:
                    conn = self._conn
                    if conn is None:
                        conn = self._conn = self._connection()
                    await conn.send_packed_command(
                        _plain_command(self._plain_head(k), 6, (job,), *self._encoding)
                    )
                    await conn.read_response()
                except (rexc.ConnectionError, rexc.TimeoutError, rexc.NoScriptError):
                    await self._run_plain(k, job)
                finally:
                    self._conn_busy = False
        except BaseException as exc:
            guard.leave(type(exc), exc)
            raise
        guard.leave(None, None)
        self._remember(job.id, job.queue)
        return job.id

    async def _run_plain(self, k: _Keys, job: Job) -> None:
        """ENQUEUE_PLAIN of one job the usual way (through the pool, with its retries)."""
        created = job.created_at.timestamp()
        await self._run("ENQUEUE_PLAIN", (k.ready,), (
            k.tag, k.new, job.id, _pack(job, created), int(created * 1000)))

    def _plain_head(self, k: _Keys) -> bytes:
        """EVALSHA ENQUEUE_PLAIN 1 ready tag new, encoded as the client encodes strings."""
        head = self._heads.get(k.ready)
        if head is None:
            encoder = self._client.get_encoder()
            self._encoding = (encoder.encoding, encoder.encoding_errors)
            head = self._heads[k.ready] = _resp_args(*(encoder.encode(arg) for arg in (
                "EVALSHA", self._scripts["ENQUEUE_PLAIN"].sha, 1, k.ready, k.tag, k.new)))
        return head

    async def _enqueue(self, jobs: list[Job]) -> list[str]:
        if len(jobs) == 1:  # the common case, without the grouping
            job = jobs[0]
            queue = job.queue
            k = self._k(queue)
            async with _Errors(self, "enqueue"):
                if queue not in self._registered:
                    await self._client.sadd(self._queues_key, queue)
                    self._registered.add(queue)
                if _plain(job):
                    await self._run_plain(k, job)
                    job_id = job.id
                else:
                    hits = await self._run(
                        "ENQUEUE", (k.ready,), (k.tag, k.new, _packb((_entry(job),))))
                    job_id = hits[1].decode() if hits else job.id
            self._remember(job_id, queue)
            return [job_id]
        ids = [job.id for job in jobs]
        queue = jobs[0].queue
        if len(jobs) > _SUB_BATCH and not self._is_cluster and all(
            job.queue == queue for job in jobs
        ):
            async with _Errors(self, "enqueue"):
                if queue not in self._registered:
                    await self._client.sadd(self._queues_key, queue)
                    self._registered.add(queue)
                try:
                    hits = await self._stream_enqueue(self._k(queue), jobs)
                except rexc.ConnectionError:  # once more, the usual way (idempotent by id)
                    k = self._k(queue)
                    hits = await self._run(
                        "ENQUEUE", (k.ready,), (k.tag, k.new, _packb(_entries(jobs)))
                    )
            for i in range(0, len(hits), 2):
                ids[int(hits[i]) - 1] = hits[i + 1].decode()
            self._remember_all(ids, queue)
            return ids
        by_queue: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(i)
        calls: list[tuple[str, Sequence[str], Sequence[Any]]] = []
        for queue, indexes in by_queue.items():
            k = self._k(queue)
            entries = _entries([jobs[i] for i in indexes])
            calls.append(("ENQUEUE", (k.ready,), (k.tag, k.new, _packb(entries))))
        new = [q for q in by_queue if q not in self._registered]
        async with _Errors(self, "enqueue"):
            if new:
                await self._client.sadd(self._queues_key, *new)
                self._registered.update(new)
            replies = await self._gather(calls)
        for (queue, indexes), hits in zip(by_queue.items(), replies, strict=True):
            for i in range(0, len(hits), 2):
                ids[indexes[int(hits[i]) - 1]] = hits[i + 1].decode()
            for i in indexes:
                self._remember(ids[i], queue)
        return ids

    async def _stream_enqueue(self, k: _Keys, jobs: list[Job]) -> list[Any]:
        """Enqueue one queue's jobs in sub-batches over one connection: each sub-batch is
        sent as soon as it is packed, so the server runs it while the next one is packed;
        the replies are read afterwards, in order (one connection keeps the order). A
        sub-batch of plain jobs goes to ENQUEUE_PLAIN, any other to ENQUEUE.
        Returns the idempotency-key hits as ENQUEUE does, positions counted in ``jobs``."""
        pool = self._client.connection_pool
        own = not self._conn_busy  # the producer's connection when it is free, else the pool's
        if own:
            self._conn_busy = True
            if self._conn is None:
                self._conn = self._connection()
            conn = self._conn
        else:
            try:
                conn = await pool.get_connection()
            except TypeError:  # redis-py < 5.3 wants a command name
                conn = await pool.get_connection("EVALSHA")
        try:
            batches = [(start, jobs[start : start + _SUB_BATCH])
                       for start in range(0, len(jobs), _SUB_BATCH)]
            out: list[Any] = []
            for attempt in (1, 2):
                for _, batch in batches:
                    if all(map(_plain, batch)):
                        await conn.send_packed_command(_plain_command(
                            self._plain_head(k), 6, batch, *self._encoding))
                    else:
                        await conn.send_command("EVALSHA", self._scripts["ENQUEUE"].sha, 1,
                                                k.ready, k.tag, k.new, _packb(_entries(batch)))
                missing = []
                for start, batch in batches:
                    try:
                        reply = await conn.read_response()
                    except rexc.NoScriptError:
                        missing.append((start, batch))
                        continue
                    if isinstance(reply, list):  # ENQUEUE's idempotency-key hits
                        for i in range(0, len(reply), 2):
                            out += (int(reply[i]) + start, reply[i + 1])
                if not missing:
                    return out
                if attempt == 2:
                    raise rexc.NoScriptError("the enqueue scripts could not be loaded")
                # A script was missing (SCRIPT FLUSH, a failover): load both, send those
                # sub-batches again (the others are stored; order comes from the jobs).
                for name in ("ENQUEUE_PLAIN", "ENQUEUE"):
                    await self._client.script_load(self._scripts[name].source)
                batches = missing
            raise AssertionError("unreachable")
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            if own:
                self._conn_busy = False
            else:
                await pool.release(conn)

    # ------------------------------------------------------------------ consuming
    async def _claim(self, queues: list[str], limit: int, lease: float, worker: str) -> list[Job]:
        if self._jobs_event is not None:
            self._jobs_event.clear()
        lease_ms = int(lease * 1000)
        out: list[Job] = []
        next_due: float | None = None
        async with _Errors(self, "claim"):
            for queue in queues:
                k = self._k(queue)
                reply = await self._run(
                    "CLAIM", (k.ready,), (k.tag, limit - len(out), lease_ms, worker)
                )
                now = int(reply[0])
                if int(reply[1]) >= 0:
                    due = int(reply[1]) / 1000
                    next_due = due if next_due is None else min(next_due, due)
                if len(reply) > 2:
                    started = _dt(now)
                    until = _dt(now + lease_ms)
                    for i in range(2, len(reply), 6):
                        eta = reply[i + 5]
                        job = _unpack(
                            reply[i + 2], state="running", attempt=reply[i + 1],
                            failures=int(reply[i + 3]), lease_expiries=int(reply[i + 4]),
                            eta=_dt(eta) if eta else None, lease_until=until,
                            worker=worker, started_at=started,
                        )
                        out.append(job)
                        self._remember(job.id, queue)
                if len(out) >= limit:
                    break
        self._next_due = None if next_due is None else time.monotonic() + next_due
        return out

    async def _extend(self, jobs: list[Job], lease: float) -> list[LeaseState]:
        by_queue: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(i)
        calls = []
        for queue, indexes in by_queue.items():
            k = self._k(queue)
            entries = [(jobs[i].id, jobs[i].attempt) for i in indexes]
            calls.append(("EXTEND", (k.ready,), (k.tag, int(lease * 1000), _packb(entries))))
        async with _Errors(self, "heartbeat"):
            replies = await self._gather(calls)
        out: list[LeaseState] = ["lost"] * len(jobs)
        for indexes, reply in zip(by_queue.values(), replies, strict=True):
            for i, code in zip(indexes, reply, strict=True):
                out[i] = _LEASE_STATES[int(code)]
        return out

    async def _finish(self, items: list[Finish]) -> list[bool]:
        by_queue: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_queue.setdefault(item.job.queue, []).append(i)
        calls = []
        for queue, indexes in by_queue.items():
            k = self._k(queue)
            entries = []
            for i in indexes:
                item = items[i]
                job = item.job
                if item.outcome == "retry":
                    data: Any = max(0, int(item.retry_delay * 1000))
                elif item.result is not None:
                    data = item.result
                else:
                    data = b""
                entries.append((job.id, job.attempt, _OUTCOME[item.outcome], data,
                                job.failures, max(int(item.ttl * 1000), 1)))
            calls.append(("FINISH", (k.ready,), (k.tag, self._done, k.new, _packb(entries))))
        async with _Errors(self, "finish"):
            replies = await self._gather(calls)
        out = [False] * len(items)
        for indexes, reply in zip(by_queue.values(), replies, strict=True):
            for i, ok in zip(indexes, reply, strict=True):
                out[i] = bool(ok)
        return out

    async def _wait_for_jobs(self, queues: list[str], timeout: float) -> None:
        """Sleep until an enqueue publishes on one of ``queues``' channels, the next
        scheduled job is due, or ``timeout`` passes."""
        if self._jobs_event is None:
            self._jobs_event = asyncio.Event()
        channels = [f"{self.prefix}:new:{q}".encode() for q in queues]
        fresh = [c for c in channels if c not in self._job_channels]
        if fresh:
            event = self._jobs_event
            notifier = self._notify()
            for channel in fresh:
                self._job_channels.add(channel)
                await notifier.add(channel, lambda _data: event.set(), timeout)
            return  # subscribed only now: a job may have arrived meanwhile
        if self._next_due is not None:
            timeout = min(timeout, max(0.0, self._next_due - time.monotonic()))
        if self._jobs_event.is_set():
            return
        try:
            await asyncio.wait_for(self._jobs_event.wait(), timeout)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ results
    async def _get_result(self, job_id: str) -> bytes | None:
        async with _Errors(self, "get_result"):
            queue = self._where.get(job_id)
            if queue is not None:
                data: bytes | None = await self._client.get(self._k(queue).results + job_id)
                return data
            for queue in await self._locate(job_id):
                data = await self._client.get(self._k(queue).results + job_id)
                if data is not None:
                    self._remember(job_id, queue)
                    return data
            return None

    async def _wait_result(
        self, job_id: str, timeout: float | None
    ) -> bytes | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        channel = (self._done + job_id).encode()
        notifier = self._notify()
        box: list[asyncio.Future[bytes | None]] = [loop.create_future()]

        def listener(data: bytes | None) -> None:
            if not box[0].done():
                box[0].set_result(data)

        def left() -> float:
            """Time to wait now: what is left, but never more than the safety interval."""
            if deadline is None:
                return _SAFETY_LOOK
            return min(_SAFETY_LOOK, max(0.0, deadline - loop.time()))

        try:
            # Subscribed (confirmed) before the look below, so a result stored after the
            # look is published to us. If the confirmation is slow (server down), look
            # anyway; the listener stays registered and the reader subscribes on reconnect.
            await notifier.add(channel, listener, left())
            while True:
                data = await self._get_result(job_id)
                if data is not None:
                    return data
                if deadline is not None and loop.time() >= deadline:
                    return None
                try:
                    got = await asyncio.wait_for(asyncio.shield(box[0]), left())
                except TimeoutError:
                    continue  # the safety look (or the deadline's last look)
                if got:
                    return got
                box[0] = loop.create_future()  # woken by a reconnect: look again
        finally:
            notifier.remove(channel, listener)

    # ------------------------------------------------------------------ management
    async def _get_job(self, job_id: str) -> Job | None:
        async with _Errors(self, "get_job"):
            for queue in await self._locate(job_id):
                h = await self._client.hgetall(self._k(queue).jobs + job_id)
                if h:
                    self._remember(job_id, queue)
                    return _job_from_hash(h)
        return None

    async def _cancel(self, job_id: str, result: bytes, ttl: float) -> CancelOutcome:
        outcome: CancelOutcome = "not_found"
        async with _Errors(self, "cancel"):
            for queue in await self._locate(job_id):
                k = self._k(queue)
                reply = await self._run(
                    "CANCEL", (k.ready,),
                    (k.tag, self._done, job_id, result, int(ttl * 1000)),
                )
                outcome = reply.decode()
                if outcome != "not_found":
                    return outcome
        return outcome

    async def _queue_names(self, queues: list[str] | None) -> list[str]:
        if queues is not None:
            return queues
        return sorted(m.decode() for m in await self._client.smembers(self._queues_key))

    async def _stats(self, queues: list[str] | None) -> dict[str, QueueStats]:
        async with _Errors(self, "stats"):
            names = await self._queue_names(queues)
            calls = []
            for queue in names:
                k = self._k(queue)
                calls.append(("STATS", (k.ready,), (k.tag,)))
            replies = await self._gather(calls) if calls else []
        return {q: QueueStats(*(int(x) for x in r)) for q, r in zip(names, replies, strict=True)}

    async def _purge(self, queues: list[str] | None) -> int:
        total = 0
        async with _Errors(self, "purge"):
            names = await self._queue_names(queues)
        for queue in names:
            k = self._k(queue)
            while True:  # 500 jobs per call: a big queue never blocks the server long
                async with _Errors(self, "purge"):
                    n, done = await self._run("PURGE", (k.ready,), (k.tag, 500))
                total += int(n)
                if int(done):
                    break
            self._registered.discard(queue)
        async with _Errors(self, "purge"):
            if names:
                await self._client.srem(self._queues_key, *names)
            if queues is None:
                # Ticks of queues that never had a job (and ticks stored
                # by older releases, keyed by schedule name).
                await self._delete_matching(f"{{{self.prefix}:*}}:ticks")
                await self._delete_matching(f"{{{self.prefix}:tick:*")
                self._where.clear()
            else:
                self._where = {i: q for i, q in self._where.items() if q not in names}
        return total

    async def _delete_matching(self, pattern: str) -> None:
        client = self._client
        if self._is_cluster:
            for node in client.get_primaries():
                async for key in client.scan_iter(match=pattern, count=500, target_nodes=node):
                    await client.delete(key)
            return
        async for key in client.scan_iter(match=pattern, count=500):
            await client.delete(key)

    async def _claim_tick(self, name: str, tick: datetime, queue: str) -> bool:
        k = self._k(queue)
        ms = _ms(tick)
        async with _Errors(self, "claim_tick"):
            pipe = self._client.pipeline(transaction=False)
            pipe.zremrangebyscore(k.ticks, "-inf", ms - _TICK_TTL_MS)
            pipe.zadd(k.ticks, {f"{name}:{ms}": ms}, nx=True)
            _, added = await pipe.execute()
        return bool(added)

    async def _dead_letters(self, queue: str, limit: int) -> list[Job]:
        k = self._k(queue)
        async with _Errors(self, "dead_letters"):
            reply = await self._run("DEAD", (k.ready,), (k.tag, limit))
        jobs = []
        for i in range(0, len(reply), 2):
            flat = reply[i + 1]
            jobs.append(_job_from_hash(dict(zip(flat[::2], flat[1::2], strict=True))))
        return jobs

    async def _requeue(self, job_id: str) -> bool:
        async with _Errors(self, "requeue"):
            for queue in await self._locate(job_id):
                k = self._k(queue)
                ok = await self._run("REQUEUE", (k.ready,), (k.tag, job_id, k.new))
                if ok:
                    return True
        return False
