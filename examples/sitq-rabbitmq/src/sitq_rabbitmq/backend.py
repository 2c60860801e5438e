"""RabbitMQBackend: sitq's storage steps mapped onto AMQP 0-9-1 with aio-pika.

How each part of the contract maps (README.md says why):

* **Jobs wait** as persistent messages ("pointers", carrying the whole job) in a durable
  queue per sitq queue with ``x-max-priority``, published with publisher confirms.
* **A claim** is ``basic.get`` with a manual ack: the broker hands the message to one
  channel only. The holder keeps it unacked while the job runs; if the process dies the
  connection closes and the broker puts the message back. The sitq lease is enforced by
  the holder: a claim not extended in time is ``nack``-ed back to the queue.
* **State and results** live in a *record queue* per job (``x-max-length=1``): its one
  message is the job's current record. Taking that message unacked is a lock; a change
  publishes the new record and acks the old one. Readers take it and ``nack`` it back.
  The record arbitrates everything a broker cannot: cancel vs claim, fencing (the
  record's ``attempt``), idempotency keys, results with their TTL.
* **Delays** (ETA, retry back-off) step through binary TTL levels that dead-letter into
  each other and finally into the work queue: no broker plugin needed.
* **Dead letters** are published to a dead-letter exchange into ``<queue>:dead``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
import msgpack
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aio_pika.exceptions import ChannelClosed, DeliveryError
from pamqp.commands import Basic

from sitq.backend import Backend, CancelOutcome, Finish, LeaseState, QueueStats
from sitq.errors import BackendError, ConfigurationError
from sitq.job import Job

from ._names import DELAY_LEVELS, DELAY_UNIT, Names, delay_route, level_pattern

__all__ = ["RabbitMQBackend"]

log = logging.getLogger("sitq_rabbitmq")

T = TypeVar("T")
Record = dict[str, Any]
#: A change to one record, run while its lock is held: gets the record (``None`` if there
#: is none) and a channel to publish on; returns the new record (``None``: unchanged) and
#: a value for the caller.
Change = Callable[[Record | None, AbstractChannel], Awaitable[tuple[Record | None, T]]]

_LIVE = ("queued", "running")
#: How long a writer waits for a record another client holds before giving up.
_LOCK_TIMEOUT = 30.0
#: Record queues live at least this long after their last use (``x-expires``).
_MIN_RECORD_LIFE = 60.0


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@dataclass(slots=True)
class _Held:
    """A claimed delivery this process holds unacked while the job runs."""

    message: AbstractIncomingMessage
    channel: AbstractChannel
    queue: str
    timer: asyncio.TimerHandle
    running: AbstractQueue
    tag: str


class _Missing(Exception):
    """The queue does not exist (the broker closed the channel with 404)."""


class RabbitMQBackend(Backend):
    """A sitq backend on RabbitMQ. Build it from a URL::

        amqp://guest:guest@127.0.0.1:5672/?prefix=sitq&max_priority=10

    ``prefix`` names every queue and exchange (several apps can share a vhost);
    ``max_priority`` is the work queues' ``x-max-priority`` (job priorities are clamped
    to ``0..max_priority``); ``channels`` the size of the channel pool; ``tick_ttl``
    (seconds) how long a claimed cron tick is remembered. Other query parameters (such
    as ``heartbeat``) go to aio-pika.
    """

    schemes: ClassVar[tuple[str, ...]] = ("amqp", "amqps")
    supports_dead_letters: ClassVar[bool] = True

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        prefix: str = "sitq",
        max_priority: int = 10,
        channels: int = 8,
        tick_ttl: float = 86400.0,
        result_ttl: float | None = None,
    ) -> None:
        super().__init__(url=url, result_ttl=result_ttl)
        try:
            self.names = Names(prefix)
        except ValueError as exc:
            raise ConfigurationError(f"{exc}; set it with ?prefix=... in the URL") from None
        if not 1 <= int(max_priority) <= 255:
            raise ConfigurationError(f"max_priority must be 1..255, got {max_priority!r}")
        self.max_priority = int(max_priority)
        self.pool_size = max(1, int(channels))
        self.tick_ttl = float(tick_ttl)
        self._amqp_url = url
        self._conn: AbstractConnection | None = None
        self._work: AbstractChannel | None = None
        self._wake: AbstractChannel | None = None
        self._free: asyncio.Queue[AbstractChannel] = asyncio.Queue()
        self._held: dict[tuple[str, int], _Held] = {}
        self._declared: set[str] = set()  # sitq queues whose topology exists
        self._levels: dict[str, int] = {}  # sitq queue -> delay levels declared
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RabbitMQBackend:
        parts = urlsplit(url)
        ours = {"prefix": str, "max_priority": int, "channels": int, "tick_ttl": float}
        rest = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in ours:
                try:
                    options.setdefault(name, ours[name](value))
                except ValueError:
                    raise ConfigurationError(
                        f"bad value {value!r} for {name} in the RabbitMQ URL"
                    ) from None
            else:
                rest.append((name, value))
        amqp_url = urlunsplit(parts._replace(query=urlencode(rest)))
        backend = cls(amqp_url, **options)
        backend.url = url
        return backend

    # ------------------------------------------------------------------ connection
    async def _connect(self) -> None:
        try:
            self._conn = await aio_pika.connect(self._amqp_url)
        except Exception as exc:
            raise BackendError(f"cannot connect to RabbitMQ at {self._safe_url()}: {exc}") from exc
        self._work = await self._conn.channel(publisher_confirms=False)
        self._wake = await self._conn.channel(publisher_confirms=False)
        await self._wake.set_qos(prefetch_count=1)
        self._free = asyncio.Queue()
        for _ in range(self.pool_size):
            self._free.put_nowait(await self._conn.channel())
        self._declared.clear()
        self._levels.clear()

    async def _close(self) -> None:
        for held in self._held.values():
            held.timer.cancel()
        self._held.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._conn is not None:
            # Unacked deliveries go back to their queues when the connection closes.
            await self._conn.close()
            self._conn = None

    def _safe_url(self) -> str:
        parts = urlsplit(self._amqp_url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}:{parts.port or 5672}{parts.path}"

    async def _alive(self) -> None:
        """Reconnect after a lost connection (every held delivery is lost with it)."""
        if self._conn is None or self._conn.is_closed:
            log.warning("connection to %s lost; reconnecting", self._safe_url())
            await self._close()
            await self._connect()

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        """A pool channel (publisher confirms on) for records, probes and publishes."""
        await self._alive()
        channel = await self._free.get()
        try:
            if channel.is_closed:  # a 404 closed it in an earlier use
                await channel.reopen()
            yield channel
        finally:
            self._free.put_nowait(channel)

    # ------------------------------------------------------------------ small steps
    async def _publish(
        self, channel: AbstractChannel, routing_key: str, body: bytes, *,
        exchange: str = "", priority: int | None = None, expiration: float | None = None,
        message_id: str | None = None,
    ) -> bool:
        """Publish persistently and wait for the confirm; False if it was unroutable."""
        target = (channel.default_exchange if not exchange
                  else await channel.get_exchange(exchange, ensure=False))
        message = aio_pika.Message(
            body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=priority,
            expiration=expiration, message_id=message_id,
        )
        confirm = await target.publish(message, routing_key=routing_key, mandatory=True)
        return isinstance(confirm, Basic.Ack)

    async def _get(
        self, channel: AbstractChannel, name: str, *, no_ack: bool = False
    ) -> AbstractIncomingMessage | None:
        """``basic.get``; raises _Missing when the queue does not exist."""
        queue = await channel.get_queue(name, ensure=False)
        try:
            return await queue.get(no_ack=no_ack, fail=False)
        except ChannelClosed as exc:  # 404 NOT_FOUND closes the channel
            if channel.is_closed:
                await channel.reopen()
            raise _Missing(name) from exc

    async def _probe(self, name: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of a queue, or None if it does not exist."""
        async with self._channel() as channel:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelClosed:
                return None
            result = queue.declaration_result
            return result.message_count or 0, result.consumer_count or 0

    # ------------------------------------------------------------------ records
    async def _declare_record(self, channel: AbstractChannel, name: str, life: float) -> None:
        await channel.declare_queue(name, durable=True, arguments={
            "x-max-length": 1, "x-expires": _ms(max(life, _MIN_RECORD_LIFE))})

    def _record_life(self, job: Record) -> float:
        eta = job.get("eta") or 0.0
        return (job.get("result_ttl") or self.result_ttl) + max(0.0, eta - time.time())

    async def _locked(self, name: str, change: Change[T], *, life: float | None = None) -> T:
        """Run ``change`` on the record in queue ``name`` while holding its message.

        The record's one message is taken unacked (no other client can take it), the new
        record is published, then the old one acked. A record another client holds reads
        as an empty queue: wait and try again. ``life``: create the record queue with
        this lifetime if it is missing and ``change`` returns a record.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _LOCK_TIMEOUT
        delay = 0.001
        while True:
            async with self._channel() as channel:
                try:
                    message = await self._get(channel, name)
                    exists = True
                except _Missing:
                    message, exists = None, False
                if message is not None or not exists:
                    record = None if message is None else _unpack(message.body)
                    try:
                        new, out = await change(record, channel)
                        if new is not None:
                            if not exists:
                                if life is None:
                                    return out
                                await self._declare_record(channel, name, life)
                            await self._publish(channel, name, _pack(new))
                    except BaseException:
                        if message is not None and not channel.is_closed:
                            await message.nack(requeue=True)
                        raise
                    if message is not None:
                        if new is not None:
                            await message.ack()
                        else:
                            await message.nack(requeue=True)
                    return out
            if loop.time() > deadline:
                raise BackendError(f"record {name} stayed locked for {_LOCK_TIMEOUT:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

    async def _read(self, name: str) -> Record | None:
        async def keep(record: Record | None, _: AbstractChannel) -> tuple[None, Record | None]:
            return None, record

        return await self._locked(name, keep)

    # ------------------------------------------------------------------ topology
    async def _ensure_queue(self, queue: str) -> None:
        """Declare the work queue of ``queue`` and its companions (once per connection)."""
        if queue in self._declared:
            return
        n = self.names
        work = n.work(queue)
        async with self._channel() as ch:
            await ch.declare_queue(work, durable=True, arguments={
                "x-max-priority": self.max_priority, "x-dead-letter-exchange": n.dlx})
            dlx = await ch.declare_exchange(n.dlx, aio_pika.ExchangeType.DIRECT, durable=True)
            dead = await ch.declare_queue(n.dead(queue), durable=True)
            await dead.bind(dlx, routing_key=work)
            await ch.declare_queue(n.running(queue), durable=True)
            await ch.declare_queue(n.journal(queue), durable=True)
            due = await ch.declare_exchange(n.due(queue), aio_pika.ExchangeType.FANOUT,
                                            durable=True)
            await (await ch.get_queue(work, ensure=False)).bind(due)
        await self._register(queue)
        self._declared.add(queue)

    async def _ensure_levels(self, queue: str, height: int) -> None:
        """Declare delay levels ``0..height-1`` of ``queue``.

        Level ``k`` is a topic exchange bound to its TTL queue (for keys whose word ``k``
        is ``1``) and to level ``k-1``'s exchange (word ``k`` is ``0``); the queue
        dead-letters into level ``k-1``'s exchange, level 0 into the ``due`` exchange.
        """
        have = self._levels.get(queue, 0)
        if have >= height:
            return
        await self._ensure_queue(queue)
        n = self.names

        def below(k: int) -> str:
            return n.level(queue, k - 1) if k else n.due(queue)

        async with self._channel() as ch:
            for k in range(have, height):
                await ch.declare_exchange(n.level(queue, k), aio_pika.ExchangeType.TOPIC,
                                          durable=True)
            for k in range(have, height):
                exchange = await ch.get_exchange(n.level(queue, k), ensure=False)
                held = await ch.declare_queue(n.level(queue, k), durable=True, arguments={
                    "x-message-ttl": round(DELAY_UNIT * 1000 * 2**k),
                    "x-dead-letter-exchange": below(k)})
                await held.bind(exchange, routing_key=level_pattern(k, "1"))
                nxt = await ch.get_exchange(below(k), ensure=False)
                await nxt.bind(exchange, routing_key=level_pattern(k, "0"))
        self._levels[queue] = height

    async def _register(self, queue: str) -> None:
        """Add ``queue`` to the prefix's list of queues (for ``stats()`` of all queues)."""
        async def add(record: Record | None, _: AbstractChannel) -> tuple[Record | None, None]:
            names = (record or {}).get("queues", [])
            return (None, None) if queue in names else ({"queues": [*names, queue]}, None)

        await self._locked(self.names.registry, add, life=10 * 365 * 86400.0)

    async def _registered(self) -> list[str]:
        async def keep(record: Record | None, _: AbstractChannel) -> tuple[None, list[str]]:
            return None, list((record or {}).get("queues", []))

        return await self._locked(self.names.registry, keep)

    # ------------------------------------------------------------------ pointers
    async def _route(self, job: Record) -> tuple[str, str]:
        """(exchange, routing key) of the job's pointer, its topology declared: the work
        queue, or the delay level its ``eta`` starts at."""
        queue = job["queue"]
        eta = job.get("eta")
        units = 0 if eta is None else math.ceil((eta - time.time()) / DELAY_UNIT)
        if units <= 0:
            await self._ensure_queue(queue)
            return "", self.names.work(queue)
        if units >= 2**DELAY_LEVELS:
            raise ConfigurationError(
                f"eta {eta} is too far ahead (at most {DELAY_UNIT * 2**DELAY_LEVELS:.0f} "
                "seconds); schedule it closer and re-enqueue it then"
            )
        level, key = delay_route(units)
        await self._ensure_levels(queue, level + 1)
        return self.names.level(queue, level), key

    async def _send_all(
        self, channel: AbstractChannel, pointers: list[tuple[Record, int]]
    ) -> None:
        """Publish pointers ``(job, seq)`` in this order, pipelined on one channel."""
        routes = [await self._route(job) for job, _ in pointers]
        exchanges = {name: (channel.default_exchange if not name
                            else await channel.get_exchange(name, ensure=False))
                     for name in {exchange for exchange, _ in routes}}
        sends = [
            exchanges[exchange].publish(
                aio_pika.Message(
                    _pack({"job": job, "seq": seq}), message_id=job["id"],
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    priority=min(max(int(job.get("priority") or 0), 0), self.max_priority),
                ),
                routing_key=key, mandatory=True,
            )
            for (job, seq), (exchange, key) in zip(pointers, routes, strict=True)
        ]
        confirms = await asyncio.gather(*sends)
        unroutable = [p for p, c in zip(pointers, confirms, strict=True)
                      if not isinstance(c, Basic.Ack)]
        if unroutable:  # another client purged the queue meanwhile: declare it again
            for job, _ in unroutable:
                self._declared.discard(job["queue"])
                self._levels.pop(job["queue"], None)
            await self._send_all(channel, unroutable)

    # ------------------------------------------------------------------ enqueue
    async def _enqueue(self, jobs: list[Job]) -> list[str]:
        ids: list[str] = []
        created: list[Record] = []
        for job in jobs:
            record = job.to_dict()
            record["state"] = "queued"
            if job.key is not None:  # one by one: a later job may find this one's key
                holder = await self._take_key(job)
                if holder != job.id:
                    ids.append(holder)
                    continue
                await self._create(record)
            created.append(record)
            ids.append(job.id)
        await asyncio.gather(*(self._create(r) for r in created if r["key"] is None))
        # Pointers in due order (earlier eta or creation first; the broker orders priority).
        due = sorted(created, key=lambda r: r["eta"] or r["created_at"])
        async with self._channel() as channel:
            await self._send_all(channel, [(r, 0) for r in due])
        return ids

    async def _create(self, job: Record) -> None:
        """Declare and write the job's record, and add the job to its queue's journal."""
        name = self.names.record(job["id"])
        life = self._record_life(job)
        record = {"job": job, "seq": 0, "result": None, "expires": None, "dead": False}
        entry = _pack({"id": job["id"], "key": job["key"]})
        for _ in range(3):
            await self._ensure_queue(job["queue"])
            async with self._channel() as channel:
                await self._declare_record(channel, name, life)
                _, journaled = await asyncio.gather(
                    self._publish(channel, name, _pack(record)),
                    self._publish(channel, self.names.journal(job["queue"]), entry,
                                  expiration=max(life, _MIN_RECORD_LIFE)),
                )
            if journaled:
                return
            self._declared.discard(job["queue"])  # purged by another client: declare again
        raise BackendError(f"could not add job {job['id']} to queue {job['queue']!r}")

    async def _take_key(self, job: Job) -> str:
        """Own ``job.key`` (returns ``job.id``) or return the id of the live job holding it.

        The key is a queue holding the holder's id, with ``x-max-length=1`` and
        ``x-overflow=reject-publish``: of two publishes, the broker confirms one.
        """
        assert job.key is not None
        name = self.names.key(job.queue, job.key)
        for _ in range(100):
            async with self._channel() as channel:
                await channel.declare_queue(name, durable=True, arguments={
                    "x-max-length": 1, "x-overflow": "reject-publish"})
                try:
                    if await self._publish(channel, name, job.id.encode()):
                        return job.id
                except DeliveryError:
                    pass  # full: someone holds the key
                try:
                    message = await self._get(channel, name)
                except _Missing:
                    continue
                if message is None:  # being read or released right now
                    await asyncio.sleep(0.005)
                    continue
                holder = message.body.decode()
                await message.nack(requeue=True)
            record = await self._read(self.names.record(holder))
            if record is not None and record["job"]["state"] in _LIVE:
                return holder
            await self._free_key(job.queue, job.key, holder)  # it ended without freeing it
        raise BackendError(f"could not take idempotency key {job.key!r}")

    async def _free_key(self, queue: str, key: str, holder: str) -> None:
        """Delete the key's queue if it still names ``holder``."""
        name = self.names.key(queue, key)
        async with self._channel() as channel:
            for _ in range(100):
                try:
                    message = await self._get(channel, name)
                except _Missing:
                    return
                if message is None:
                    await asyncio.sleep(0.005)
                    continue
                if message.body.decode() == holder:
                    await channel.queue_delete(name)  # the held message goes with it
                else:
                    await message.nack(requeue=True)
                return

    # ------------------------------------------------------------------ claim
    async def _claim(self, queues: list[str], limit: int, lease: float, worker: str) -> list[Job]:
        await self._alive()
        out: list[Job] = []
        for queue in await self._existing(queues):
            while len(out) < limit:
                taken = await self._take_pointers(queue, limit - len(out))
                if not taken:
                    break
                jobs = await asyncio.gather(
                    *(self._start(queue, m, lease, worker) for m in taken))
                out += [j for j in jobs if j is not None]
        return out

    async def _existing(self, queues: list[str]) -> list[str]:
        """The queues whose work queue exists. Claims and waits never declare one: a
        worker polling a purged queue must not bring it back."""
        for queue in queues:
            if queue not in self._declared and await self._probe(self.names.work(queue)):
                self._declared.add(queue)
        return [q for q in queues if q in self._declared]

    async def _take_pointers(self, queue: str, count: int) -> list[AbstractIncomingMessage]:
        assert self._work is not None
        taken: list[AbstractIncomingMessage] = []
        while len(taken) < count:
            try:
                message = await self._get(self._work, self.names.work(queue))
            except _Missing:  # purged by another client: declare it again next time
                self._lost_channel(self._work)
                self._declared.discard(queue)
                break
            if message is None:
                break
            taken.append(message)
        return taken

    async def _start(
        self, queue: str, message: AbstractIncomingMessage, lease: float, worker: str
    ) -> Job | None:
        """Turn one taken pointer into a running job, or drop it if it is stale."""
        assert self._work is not None
        pointer = _unpack(message.body)
        seq = pointer["seq"]
        now = time.time()

        async def start(record: Record | None, _: AbstractChannel) -> tuple[Record | None, Any]:
            if record is None:  # the record expired while the job waited: rebuild it
                record = {"job": pointer["job"], "seq": seq, "result": None,
                          "expires": None, "dead": False}
            job = record["job"]
            if record["seq"] != seq or job["state"] not in _LIVE:
                return None, None  # a pointer left behind by a retry, cancel or finish
            if job["state"] == "running":  # its holder died or let the lease lapse
                job["lease_expiries"] += 1
            job.update(state="running", attempt=job["attempt"] + 1, worker=worker,
                       lease_until=now + lease, started_at=now)
            return record, Job.from_dict(job)

        job: Job | None = await self._locked(self.names.record(pointer["job"]["id"]), start,
                                             life=self._record_life(pointer["job"]))
        if job is None:
            await message.ack()
            return None
        tag = f"{job.id}.{job.attempt}"
        running = await self._work.get_queue(self.names.running(queue), ensure=False)
        await running.consume(_ignore, consumer_tag=tag)
        key = (job.id, job.attempt)
        timer = asyncio.get_running_loop().call_later(lease, self._lease_lapsed, key)
        self._held[key] = _Held(message, self._work, queue, timer, running, tag)
        return job

    def _lease_lapsed(self, key: tuple[str, int]) -> None:
        """Not extended in time: give the delivery back so another worker can take it."""
        held = self._held.pop(key, None)
        if held is not None:
            log.warning("lease of job %s (attempt %d) lapsed; returning it", *key)
            self._spawn(self._let_go(held, requeue=True))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _let_go(self, held: _Held, *, requeue: bool) -> None:
        held.timer.cancel()
        if held.channel.is_closed:
            return  # the broker returned the delivery when the channel closed
        try:
            if requeue:
                await held.message.nack(requeue=True)
            else:
                await held.message.ack()
            await held.running.cancel(held.tag)
        except Exception as exc:  # the channel died meanwhile: same outcome
            log.debug("letting go of a delivery failed: %s", exc)

    def _lost_channel(self, channel: AbstractChannel) -> None:
        for key, held in list(self._held.items()):
            if held.channel is channel:
                held.timer.cancel()
                del self._held[key]

    async def _wait_for_jobs(self, queues: list[str], timeout: float) -> None:
        """Consume the work queues until a message arrives, then hand it back.

        The message is ``nack``-ed to its place in the queue, and the worker's next claim
        (or another worker's) takes it with ``basic.get``.
        """
        await self._alive()
        assert self._wake is not None
        async with self._wake_lock:
            arrived = asyncio.Event()
            messages: list[AbstractIncomingMessage] = []

            async def on_message(message: AbstractIncomingMessage) -> None:
                messages.append(message)
                arrived.set()

            consumers: list[tuple[AbstractQueue, str]] = []
            try:
                existing = await self._existing(queues)
                if not existing:
                    await asyncio.sleep(min(timeout, self.poll_interval))
                    return
                for queue in existing:
                    q = await self._wake.get_queue(self.names.work(queue), ensure=False)
                    consumers.append((q, await q.consume(on_message)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), timeout)
            finally:
                for q, tag in consumers:
                    with contextlib.suppress(Exception):
                        await q.cancel(tag)
                for message in messages:
                    with contextlib.suppress(Exception):
                        await message.nack(requeue=True)

    # ------------------------------------------------------------------ leases
    async def _extend(self, jobs: list[Job], lease: float) -> list[LeaseState]:
        return list(await asyncio.gather(*(self._extend_one(job, lease) for job in jobs)))

    async def _extend_one(self, job: Job, lease: float) -> LeaseState:
        key = (job.id, job.attempt)
        held = self._held.get(key)
        if held is None or held.channel.is_closed:
            self._held.pop(key, None)
            return "lost"
        # Renew first: the heartbeat arrived in time, however long the record read takes.
        held.timer.cancel()
        held.timer = asyncio.get_running_loop().call_later(lease, self._lease_lapsed, key)
        record = await self._read(self.names.record(job.id))
        if (record is None or record["job"]["state"] != "running"
                or record["job"]["attempt"] != job.attempt):
            return "lost"
        return "cancel" if record["job"].get("cancel_requested") else "ok"

    # ------------------------------------------------------------------ finish
    async def _finish(self, items: list[Finish]) -> list[bool]:
        return list(await asyncio.gather(*(self._finish_one(item) for item in items)))

    async def _finish_one(self, item: Finish) -> bool:
        job = item.job
        now = time.time()
        outcome = item.outcome

        async def finish(record: Record | None, ch: AbstractChannel) -> tuple[Record | None, bool]:
            if (record is None or record["job"]["state"] != "running"
                    or record["job"]["attempt"] != job.attempt):
                return None, False  # fenced: the lease was taken over, or the job ended
            stored = record["job"]
            stored.update(failures=job.failures, lease_until=None)
            if outcome in ("success", "failed"):
                stored["state"] = outcome
                ttl = item.ttl
                record.update(result=item.result, expires=now + ttl)
                if outcome == "failed":
                    record["dead"] = True
                    await self._publish(ch, self.names.work(job.queue),
                                        _pack({"job": stored, "seq": record["seq"]}),
                                        exchange=self.names.dlx, expiration=ttl,
                                        message_id=job.id)
            else:  # retry / release: a new pointer; the record's seq makes the old stale
                record["seq"] += 1
                stored.update(state="queued", worker=None,
                              eta=now + item.retry_delay if outcome == "retry" else None)
                await self._send_all(ch, [(stored, record["seq"])])
            return record, True

        ok = await self._locked(self.names.record(job.id), finish)
        held = self._held.pop((job.id, job.attempt), None)
        if held is not None:
            await self._let_go(held, requeue=not ok)
        if ok and job.key is not None and outcome in ("success", "failed"):
            await self._free_key(job.queue, job.key, job.id)
        return ok

    # ------------------------------------------------------------------ results and jobs
    def _expired(self, record: Record) -> bool:
        return record["expires"] is not None and record["expires"] <= time.time()

    async def _get_result(self, job_id: str) -> bytes | None:
        record = await self._read(self.names.record(job_id))
        if record is None or record["result"] is None or self._expired(record):
            return None
        return bytes(record["result"])

    async def _get_job(self, job_id: str) -> Job | None:
        record = await self._read(self.names.record(job_id))
        if record is None or self._expired(record):
            return None
        return Job.from_dict(record["job"])

    async def _cancel(self, job_id: str, result: bytes, ttl: float) -> CancelOutcome:
        now = time.time()

        async def cancel(record: Record | None, _: AbstractChannel) -> tuple[Record | None, Any]:
            if record is None or self._expired(record):
                return None, "not_found"
            job = record["job"]
            if job["state"] == "running":
                job["cancel_requested"] = True
                return record, "requested"
            if job["state"] != "queued":
                return None, "finished"
            job["state"] = "failed"
            record.update(result=result, expires=now + ttl)
            return record, "cancelled"

        outcome: CancelOutcome = await self._locked(self.names.record(job_id), cancel)
        if outcome == "cancelled":
            job = await self._get_job(job_id)
            if job is not None and job.key is not None:
                await self._free_key(job.queue, job.key, job_id)
        return outcome

    # ------------------------------------------------------------------ management
    async def _stats(self, queues: list[str] | None) -> dict[str, QueueStats]:
        if queues is None:
            queues = await self._registered()
        counts = await asyncio.gather(*(self._queue_stats(q) for q in queues))
        return dict(zip(queues, counts, strict=True))

    async def _queue_stats(self, queue: str) -> QueueStats:
        n = self.names
        work, dead, running = await asyncio.gather(
            self._probe(n.work(queue)), self._probe(n.dead(queue)),
            self._probe(n.running(queue)))
        scheduled = 0
        for k in range(DELAY_LEVELS):  # levels exist from 0 up to the highest delay used
            level = await self._probe(n.level(queue, k))
            if level is None:
                break
            scheduled += level[0]
        return QueueStats(queued=work[0] if work else 0, scheduled=scheduled,
                          running=running[1] if running else 0,
                          failed=dead[0] if dead else 0)

    async def _purge(self, queues: list[str] | None) -> int:
        if queues is None:
            queues = await self._registered()
        counts = [await self._purge_queue(q) for q in queues]
        return sum(counts)

    async def _purge_queue(self, queue: str) -> int:
        """Delete the records and keys of every job the queue's journal lists, then the
        queue's own queues and exchanges."""
        n = self.names
        levels = []
        for k in range(DELAY_LEVELS):
            if await self._probe(n.level(queue, k)) is None:
                break
            levels.append(n.level(queue, k))
        entries: list[Record] = []
        async with self._channel() as ch:
            while True:
                try:
                    message = await self._get(ch, n.journal(queue), no_ack=True)
                except _Missing:
                    break
                if message is None:
                    break
                entries.append(_unpack(message.body))
            for entry in entries:
                await ch.queue_delete(n.record(entry["id"]))
                if entry.get("key") is not None:
                    await ch.queue_delete(n.key(queue, entry["key"]))
            for name in (n.work(queue), n.dead(queue), n.running(queue), n.journal(queue),
                         n.ticks(queue), *levels):
                await ch.queue_delete(name)
            for name in (*levels, n.due(queue)):
                await ch.exchange_delete(name)
        self._declared.discard(queue)
        self._levels.pop(queue, None)

        async def drop(record: Record | None, ch: AbstractChannel) -> tuple[Record | None, None]:
            names = [q for q in (record or {}).get("queues", []) if q != queue]
            if record is not None and not names:  # the prefix's last queue: leave nothing
                await ch.queue_delete(n.registry)
                return None, None
            return ({"queues": names} if record and queue in record["queues"] else None), None

        await self._locked(n.registry, drop)
        return len(entries)

    async def _claim_tick(self, name: str, tick: datetime, queue: str) -> bool:
        """Ticks claimed for ``queue`` live in one record; its lock makes the claim atomic.
        Ticks older than ``tick_ttl`` are dropped from it as new ones are added."""
        stamp = f"{name}\0{tick.timestamp()!r}"
        now = time.time()

        async def claim(record: Record | None, _: AbstractChannel) -> tuple[Record | None, bool]:
            ticks = (record or {}).get("ticks", {})
            if stamp in ticks:
                return None, False
            ticks = {k: at for k, at in ticks.items() if at > now - self.tick_ttl}
            ticks[stamp] = now
            return {"ticks": ticks}, True

        return await self._locked(self.names.ticks(queue), claim, life=self.tick_ttl)

    # ------------------------------------------------------------------ dead letters
    async def _dead_letters(self, queue: str, limit: int) -> list[Job]:
        jobs: list[Job] = []
        async with self._channel() as ch:
            held: list[AbstractIncomingMessage] = []
            try:
                while len(held) < limit:
                    message = await self._get(ch, self.names.dead(queue))
                    if message is None:
                        break
                    held.append(message)
                    jobs.append(Job.from_dict(_unpack(message.body)["job"]))
            except _Missing:
                return []
            finally:
                await self._give_back(ch, self.names.dead(queue), held)
        return jobs

    async def _requeue(self, job_id: str) -> bool:
        async def back(record: Record | None, ch: AbstractChannel) -> tuple[Record | None, Any]:
            if record is None or not record.get("dead") or record["job"]["state"] != "failed":
                return None, None
            job = record["job"]
            record.update(seq=record["seq"] + 1, result=None, expires=None, dead=False)
            job.update(state="queued", failures=0, lease_expiries=0, eta=None,
                       cancel_requested=False, worker=None, lease_until=None)
            await self._send_all(ch, [(job, record["seq"])])
            return record, job["queue"]

        queue = await self._locked(self.names.record(job_id), back)
        if queue is None:
            return False
        async with self._channel() as ch:  # take its message out of the dead-letter queue
            held: list[AbstractIncomingMessage] = []
            try:
                while (message := await self._get(ch, self.names.dead(queue))) is not None:
                    if _unpack(message.body)["job"]["id"] == job_id:
                        await message.ack()
                        break
                    held.append(message)
            except _Missing:
                pass
            await self._give_back(ch, self.names.dead(queue), held)
        return True

    async def _give_back(
        self, ch: AbstractChannel, name: str, messages: list[AbstractIncomingMessage]
    ) -> None:
        """Return messages to their queue, and wait until the queue has them back.

        A ``nack`` has no reply; a passive declare on the same channel after it is
        answered only once the queue has handled the nacks (so a count read next sees
        them)."""
        if ch.is_closed:
            return
        for message in messages:
            await message.nack(requeue=True)
        if messages:
            with contextlib.suppress(ChannelClosed):
                await ch.declare_queue(name, passive=True)


async def _ignore(message: AbstractIncomingMessage) -> None:  # pragma: no cover
    """The ``running`` queue stays empty; its consumers only count running jobs."""
    await message.nack(requeue=True)
