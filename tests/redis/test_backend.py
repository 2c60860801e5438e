"""Redis-specific behaviour: URLs, the plugin, key layout, purge of every queue, dead
letters through the queue API, a push-notified result wait and idle-worker wake-ups."""

from __future__ import annotations

import asyncio
import builtins
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from sitq import TaskQueue, Worker
from sitq.errors import ConfigurationError, NotInstalled
from sitq.plugins import Registry
from sitq.testing import make_job, tasks
from sitq_redis import RedisBackend
from sitq_redis import plugin as redis_plugin

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def test_url_options_are_parsed_and_not_passed_to_redis() -> None:
    b = RedisBackend.from_url(
        "redis://user:secret@localhost:6380/2?prefix=app&cluster=no&command_timeout=5"
        "&socket_timeout=3"
    )
    assert (b.prefix, b.cluster, b.command_timeout) == ("app", False, 5.0)
    assert b._redis_url == "redis://user:secret@localhost:6380/2?socket_timeout=3"
    assert "secret" not in repr(b) and "secret" not in b.safe_url
    unix = RedisBackend.from_url("redis+unix:///run/redis.sock?db=3")
    assert unix._redis_url == "unix:///run/redis.sock?db=3"
    assert RedisBackend.from_url("rediss://h:6380/0").cluster == "auto"
    with pytest.raises(ConfigurationError, match="cluster="):
        RedisBackend.from_url("redis://h/0?cluster=maybe")
    with pytest.raises(ConfigurationError, match="without braces"):
        RedisBackend.from_url("redis://h/0?prefix=a{b}")
    with pytest.raises(ConfigurationError, match="command_timeout"):
        RedisBackend.from_url("redis://h/0?command_timeout=soon")


def test_plugin_registers_the_schemes() -> None:
    registry = Registry(entry_points=False, extra_plugins=[("redis", redis_plugin)])
    for scheme in ("redis", "rediss", "redis+unix"):
        backend = registry.backend(f"{scheme}://localhost/0")
        assert isinstance(backend, RedisBackend)
    info = next(p for p in registry.plugins if p.name == "redis")
    assert info.registered["backend"] == ["redis", "rediss", "redis+unix"]


def test_missing_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "redis" or name.startswith("redis."):
            raise ModuleNotFoundError(f"No module named {name!r}", name="redis")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "sitq_redis.backend"]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(NotInstalled, match="pip install sitq-redis"):
        redis_plugin._factory("redis://localhost/0")


def test_every_key_of_a_queue_shares_one_hash_tag() -> None:
    b = RedisBackend(prefix="p")
    k = b._k("emails")
    names = [k.ready, k.sched, k.run, k.dead, k.res, k.keys, k.jobs + "x", k.results + "x"]
    assert all(n.startswith("{p:emails}:") for n in names)


async def test_purge_everything_of_one_prefix(redis_url: str) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    async with RedisBackend.from_url(redis_url, prefix=prefix) as b:
        await b.enqueue_many([make_job("a"), make_job("b"), make_job("b")])
        assert await b.claim_tick("report", make_job("x").created_at)
        assert set(await b.stats()) == {"a", "b"}
        assert await b.purge() == 3
        assert await b.stats() == {}
        client = b._client
        left = [k async for k in client.scan_iter(match=f"*{prefix}*")]
        assert left == [f"{prefix}:marker".encode()]
        await client.delete(f"{prefix}:marker")


async def test_get_result_is_woken_by_the_server_not_by_polling(redis_url: str) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    async with RedisBackend.from_url(redis_url, prefix=prefix) as b, \
            RedisBackend.from_url(redis_url, prefix=prefix) as other:
        job = make_job("w")
        await b.enqueue(job)
        [claimed] = await other.claim(["w"], limit=1, lease=30, worker="x")
        calls = 0
        real = b._get_result

        async def counting(job_id: str) -> bytes | None:
            nonlocal calls
            calls += 1
            return await real(job_id)

        b._get_result = counting  # type: ignore[method-assign]
        waiter = asyncio.ensure_future(b.wait_result(job.id, 10))
        await asyncio.sleep(1.0)
        started = time.monotonic()
        assert await other.complete(claimed, b"v")
        assert await waiter == b"v"
        assert time.monotonic() - started < 0.5
        assert calls <= 2  # one look before subscribing, one after: no polling loop
        await b.purge(["w"])
        await b._client.delete(f"{prefix}:marker")


async def test_idle_worker_is_woken_by_an_enqueue(redis_url: str) -> None:
    queue_name = f"wake-{uuid.uuid4().hex[:8]}"
    async with TaskQueue(redis_url) as queue, \
            Worker(redis_url, queues=[queue_name], handle_signals=False):
        await asyncio.sleep(1.2)  # let it go idle on its notification channel
        for i in range(3):  # a 1 s poll would pass all three only by luck (1 in 8)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            job_id = await queue.options(queue=queue_name).enqueue(tasks.add, i, 2)
            result = await queue.get_result(job_id, timeout=5)
            assert result is not None and result.value == i + 2
            assert time.monotonic() - started < 0.5
        await queue.purge([queue_name])


async def test_dead_letters_listed_and_requeued_through_the_api(redis_url: str) -> None:
    queue_name = f"dead-{uuid.uuid4().hex[:8]}"
    async with TaskQueue(redis_url) as queue:
        job_id = await queue.options(queue=queue_name).enqueue(tasks.fail, "nope")
        async with Worker(redis_url, queues=[queue_name], handle_signals=False):
            result = await queue.get_result(job_id, timeout=10)
        assert result is not None and result.status == "failed"
        dead = await queue.backend.dead_letters(queue_name)
        assert [j.id for j in dead] == [job_id] and dead[0].state == "failed"
        assert await queue.backend.requeue(job_id)
        assert (await queue.inspect(job_id)).state == "queued"
        await queue.purge([queue_name])


async def test_eta_job_runs_on_time_without_polling(redis_url: str) -> None:
    queue_name = f"eta-{uuid.uuid4().hex[:8]}"
    async with TaskQueue(redis_url) as queue, \
            Worker(redis_url, queues=[queue_name], handle_signals=False):
        await asyncio.sleep(0.3)
        started = time.monotonic()
        job_id = await queue.options(queue=queue_name, delay=0.5).enqueue(tasks.add, 2, 2)
        result = await queue.get_result(job_id, timeout=5)
        elapsed = time.monotonic() - started
        assert result is not None and result.value == 4
        assert 0.45 < elapsed < 2.0, elapsed  # never early; not a poll cycle late
        await queue.purge([queue_name])


async def test_big_batches_stream_in_order_and_keep_keys(redis_url: str) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    async with RedisBackend.from_url(redis_url, prefix=prefix) as b:
        jobs = [make_job("big") for _ in range(1100)]  # several sub-batches on one connection
        jobs[10].key = jobs[900].key = "same-key"  # the first one holds it
        ids = await b.enqueue_many(jobs)
        assert ids[900] == jobs[10].id and ids[10] == jobs[10].id
        assert [i for n, i in enumerate(ids) if n != 900] == [
            j.id for n, j in enumerate(jobs) if n != 900
        ]
        claimed = await b.claim(["big"], limit=2000, lease=30, worker="w")
        assert [j.id for j in claimed] == [j.id for n, j in enumerate(jobs) if n != 900]
        assert await b.purge() == 1099
        await b._client.delete(f"{prefix}:marker")


async def test_due_ness_and_leases_follow_the_server_clock(redis_url: str) -> None:
    """A worker whose clock is hours off neither claims a job early nor loses leases:
    due-ness and lease deadlines come from Redis's TIME, never from the claimer's clock."""
    import time_machine

    from sitq.job import utcnow

    prefix = f"t-{uuid.uuid4().hex[:8]}"
    async with RedisBackend.from_url(redis_url, prefix=prefix) as b:
        real_now = utcnow()
        later = make_job("clock", eta=real_now + timedelta(hours=1))
        due = make_job("clock")
        await b.enqueue_many([later, due])
        with time_machine.travel(real_now + timedelta(hours=2), tick=True):  # clock ahead
            claimed = await b.claim(["clock"], limit=10, lease=30, worker="ahead")
        assert [j.id for j in claimed] == [due.id]
        until = claimed[0].lease_until
        assert until is not None and abs((until - real_now).total_seconds() - 30) < 5
        behind = make_job("clock")
        await b.enqueue(behind)
        with time_machine.travel(real_now - timedelta(hours=2), tick=True):  # clock behind
            assert [j.id for j in await b.claim(["clock"], limit=10, lease=30,
                                                worker="behind")] == [behind.id]
        await b.purge()
        await b._client.delete(f"{prefix}:marker")


async def test_a_job_sent_again_is_stored_once_on_every_enqueue_path(redis_url: str) -> None:
    """A reply lost after the store ran makes the client send the same job again: one
    plain job (its own connection, then the pool), a small batch and a streamed one."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    async with RedisBackend.from_url(redis_url, prefix=prefix) as b:
        one = make_job("again")
        assert await b.enqueue(one) == one.id  # registers the queue (the general path)
        two = make_job("again")
        assert await b.enqueue(two) == two.id  # a plain job of a known queue: ENQUEUE_PLAIN
        assert b._conn is not None  # ...over the producer's own connection
        assert await b.enqueue(two) == two.id
        assert await b.enqueue_many([two]) == [two.id]
        small = [make_job("again") for _ in range(3)]
        big = [make_job("again") for _ in range(600)]
        for _ in range(2):
            assert await b.enqueue_many(small) == [j.id for j in small]
            assert await b.enqueue_many(big) == [j.id for j in big]
        assert (await b.stats(["again"]))["again"].queued == 605
        claimed = await b.claim(["again"], limit=1, lease=30, worker="w")
        assert [j.id for j in claimed] == [one.id]
        assert await b.enqueue(one) == one.id  # sent again while it runs: not queued twice
        stats = (await b.stats(["again"]))["again"]
        assert (stats.queued, stats.running) == (604, 1)
        await b.purge()
        await b._client.delete(f"{prefix}:marker")


async def test_concurrent_single_enqueues_share_the_producer_connection(redis_url: str) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    async with RedisBackend.from_url(redis_url, prefix=prefix) as b:
        await b.enqueue(make_job("conc"))
        jobs = [make_job("conc") for _ in range(200)]
        ids = await asyncio.gather(*(b.enqueue(j) for j in jobs))  # most take the pool
        assert ids == [j.id for j in jobs]
        assert (await b.stats(["conc"]))["conc"].queued == 201
        await b.purge()
        await b._client.delete(f"{prefix}:marker")


async def test_single_enqueue_survives_a_killed_producer_connection(redis_url: str) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    async with RedisBackend.from_url(redis_url, prefix=prefix) as b:
        await b.enqueue(make_job("kill"))
        await b.enqueue(make_job("kill"))
        conn = b._conn
        await conn.send_command("CLIENT", "ID")
        conn_id = await conn.read_response()
        assert await b._client.client_kill_filter(_id=conn_id) == 1
        job = make_job("kill")
        assert await b.enqueue(job) == job.id  # the dead connection: once more, the usual way
        assert await b.enqueue(make_job("kill"))  # and the next one reconnects
        assert (await b.stats(["kill"]))["kill"].queued == 4
        await b.purge()
        await b._client.delete(f"{prefix}:marker")


def test_plain_command_is_what_redis_py_would_send() -> None:
    from redis.asyncio.connection import Connection

    from sitq_redis._records import _pack, _plain_command, _resp_args

    jobs = [make_job("q"), make_job("q")]
    jobs[1].id = "ünïcode-id"
    head = _resp_args(b"EVALSHA", b"0" * 40, b"1", b"{s:q}:ready", b"{s:q}:", b"s:new:q")
    args: list[Any] = ["EVALSHA", "0" * 40, 1, "{s:q}:ready", "{s:q}:", "s:new:q"]
    for job in jobs:
        created = job.created_at.timestamp()
        args += [job.id, _pack(job, created), int(created * 1000)]
    expected = b"".join(Connection().pack_command(*args))
    assert _plain_command(head, 6, jobs, "utf-8", "strict") == expected
