"""Faults: lost connections, silent connections, server restarts with and without AOF.

Each test starts its own redis-server on a free loopback port (never the shared one) and,
for connection faults, a TCP proxy in front of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from sitq import TaskQueue, Worker
from sitq.errors import BackendUnavailable, JobNotFound
from sitq.testing import make_job, tasks
from sitq_redis import DataLost, RedisBackend
from tests.redis._servers import RedisServer, TcpProxy
from tests.redis._tasks import record_slowly

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120), pytest.mark.slow]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def start(appendonly: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", appendonly=appendonly)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def proxy_for() -> AsyncIterator[Callable[..., object]]:
    proxies: list[TcpProxy] = []

    async def make(server: RedisServer) -> TcpProxy:
        proxy = TcpProxy(server.port)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.close()


async def test_producer_gets_backend_unavailable_when_the_server_is_gone(
    start_server: Callable[..., RedisServer],
) -> None:
    server = start_server()
    async with TaskQueue(server.url) as queue:
        await queue.enqueue(tasks.noop)
        server.kill()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="unreachable during enqueue"):
            await queue.enqueue(tasks.noop)
        with pytest.raises(BackendUnavailable):
            await queue.get_result("some-id")
        assert time.monotonic() - started < 15


async def test_silent_connection_times_out(
    start_server: Callable[..., RedisServer], proxy_for: Callable[..., object]
) -> None:
    server = start_server()
    proxy = await proxy_for(server)  # type: ignore[misc]
    backend = RedisBackend.from_url(proxy.url + "?command_timeout=1")
    async with TaskQueue(backend) as queue:
        await queue.enqueue(tasks.noop)
        proxy.pause()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"command_timeout=1\.0s"):
            await queue.enqueue(tasks.noop)
        assert time.monotonic() - started < 5
        proxy.resume()
        proxy.reset()
        await queue.enqueue(tasks.noop)  # a fresh connection works again


async def test_data_loss_after_a_restart_without_persistence_is_reported(
    start_server: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(appendonly=False)
    async with TaskQueue(server.url) as queue:
        ids = [await queue.options(queue="q").enqueue(tasks.noop) for _ in range(5)]
        assert (await queue.stats(["q"]))["q"].queued == 5
        server.restart()
        with pytest.raises(DataLost, match="lost its data"):
            await queue.options(queue="q").enqueue(tasks.noop)
        assert "lost its data" in caplog.text
        # reported once; the queue then works on the new, empty dataset
        new_id = await queue.options(queue="q").enqueue(tasks.noop)
        assert (await queue.stats(["q"]))["q"].queued == 1
        assert queue.backend.data_loss_events == 1  # type: ignore[attr-defined]
        for lost in ids:  # the store no longer holds them
            with pytest.raises(JobNotFound):
                await queue.get_result(lost)
        assert new_id not in ids


async def test_worker_reports_data_loss_and_keeps_working(
    start_server: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server = start_server(appendonly=False)
    async with TaskQueue(server.url) as queue, \
            Worker(server.url, queues=["q"], handle_signals=False, lease=3):
        first = await queue.options(queue="q").enqueue(tasks.add, 1, 2)
        assert (await queue.get_result(first, timeout=10)).value == 3  # type: ignore[union-attr]
        server.restart()
        deadline = time.monotonic() + 20
        while "lost its data" not in caplog.text:
            assert time.monotonic() < deadline, "the worker never reported the data loss"
            await asyncio.sleep(0.05)
        for _ in range(3):
            try:
                job_id = await queue.options(queue="q").enqueue(tasks.add, 2, 3)
                break
            except (DataLost, BackendUnavailable):
                await asyncio.sleep(0.2)
        result = await queue.get_result(job_id, timeout=20)
        assert result is not None and result.value == 5


async def test_appendonly_restart_loses_no_acknowledged_enqueue(
    start_server: Callable[..., RedisServer],
) -> None:
    server = start_server(appendonly=True)
    async with TaskQueue(server.url) as queue:
        q = queue.options(queue="durable")
        ids = [await q.enqueue(tasks.add, i, 1) for i in range(100)]
        ids += await q.enqueue_many(tasks.add, [(i, 1) for i in range(100, 400)])
        server.kill()  # SIGKILL right after the last acknowledged enqueue
        server.start()
        for _ in range(50):  # the first command after the restart may meet a dead socket
            try:
                stats = await queue.stats(["durable"])
                break
            except BackendUnavailable:
                await asyncio.sleep(0.1)
        assert stats["durable"].queued == 400
        async with Worker(server.url, queues=["durable"], handle_signals=False,
                          concurrency=20):
            results = [await queue.get_result(i, timeout=30) for i in ids]
        assert [r.value for r in results if r is not None] == [i + 1 for i in range(400)]
        assert queue.backend.data_loss_events == 0  # type: ignore[attr-defined]


async def test_worker_rides_out_connection_resets_without_losing_or_double_finishing(
    start_server: Callable[..., RedisServer], proxy_for: Callable[..., object], tmp_path: Path
) -> None:
    server = start_server()
    proxy = await proxy_for(server)  # type: ignore[misc]
    log = tmp_path / "executions"
    n = 200
    async with TaskQueue(server.url) as queue:
        ids = await queue.options(queue="flaky").enqueue_many(
            record_slowly, [(str(log), f"job-{i}", 0.02) for i in range(n)]
        )
        worker = Worker(proxy.url, queues=["flaky"], handle_signals=False, concurrency=5,
                        lease=2)
        async with worker:
            for _ in range(8):  # the jobs take ~0.8 s in all: reset all along
                await asyncio.sleep(0.1)
                proxy.reset()
            results = [await queue.get_result(i, timeout=60) for i in ids]
        assert all(r is not None and r.status == "success" for r in results)
        runs = Counter(log.read_text().split())
        assert set(runs) == {f"job-{i}" for i in range(n)}
        # at-least-once: a job whose claim reply was lost runs after its lease expires,
        # so it may run twice; it never ends with two results (fencing).
        assert max(runs.values()) <= 2
        assert proxy.accepted >= 4, "the resets did not hit the worker's connections"
        stats = (await queue.stats(["flaky"]))["flaky"]
        assert (stats.queued, stats.running, stats.failed) == (0, 0, 0)


async def test_result_wait_survives_a_pubsub_reconnect(
    start_server: Callable[..., RedisServer], proxy_for: Callable[..., object]
) -> None:
    server = start_server()
    proxy = await proxy_for(server)  # type: ignore[misc]
    async with RedisBackend.from_url(proxy.url) as waiter, \
            RedisBackend.from_url(server.url) as other:
        job = make_job("w")
        await other.enqueue(job)
        [claimed] = await other.claim(["w"], limit=1, lease=30, worker="w")
        wait = asyncio.ensure_future(waiter.wait_result(job.id, 20))
        await asyncio.sleep(0.3)
        proxy.reset()  # drops the pub/sub connection while waiting
        await asyncio.sleep(0.3)
        assert await other.complete(claimed, b"value")
        assert await asyncio.wait_for(wait, 20) == b"value"


async def test_worker_reconnects_after_a_restart_with_appendonly(
    start_server: Callable[..., RedisServer],
) -> None:
    server = start_server(appendonly=True)
    async with TaskQueue(server.url) as queue, \
            Worker(server.url, queues=["r"], handle_signals=False, lease=3):
        a = await queue.options(queue="r").enqueue(tasks.add, 1, 1)
        assert (await queue.get_result(a, timeout=10)).value == 2  # type: ignore[union-attr]
        server.kill()
        await asyncio.sleep(0.5)
        server.start()
        for _ in range(50):
            try:
                b = await queue.options(queue="r").enqueue(tasks.add, 2, 2)
                break
            except BackendUnavailable:
                await asyncio.sleep(0.1)
        result = await queue.get_result(b, timeout=30)
        assert result is not None and result.value == 4


async def test_scripts_reload_after_script_flush(
    start_server: Callable[..., RedisServer],
) -> None:
    server = start_server()
    async with RedisBackend.from_url(server.url) as backend:
        await backend.enqueue(make_job("s"))
        await backend.enqueue_many([make_job("s") for _ in range(600)])
        await backend._client.script_flush()
        await backend.enqueue(make_job("s"))  # EVALSHA -> NOSCRIPT -> EVAL
        await backend._client.script_flush()
        await backend.enqueue_many([make_job("s") for _ in range(600)])  # the streamed path
        assert (await backend.stats(["s"]))["s"].queued == 1202
        # Only one of the two enqueue scripts missing: a streamed batch whose plain
        # sub-batches run and whose mixed one is refused, then sent again.
        await backend._client.script_flush()
        await backend.enqueue(make_job("s"))  # loads ENQUEUE_PLAIN alone
        jobs = [make_job("s") for _ in range(600)]
        jobs[300].key = "k"
        assert await backend.enqueue_many(jobs) == [j.id for j in jobs]
        assert (await backend.stats(["s"]))["s"].queued == 1803
