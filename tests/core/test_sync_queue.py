"""SyncTaskQueue: the same API, blocking; safe from many threads and from an event
loop's thread pool; close() stops its thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sitq import JobNotFound, NotInstalled, SitqError, SyncTaskQueue, TaskFailed, Worker
from sitq.testing import tasks

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def thread_worker(url: str, **options: Any) -> Iterator[Worker]:
    """A worker running on its own event loop in a background thread."""
    options.setdefault("handle_signals", False)
    options.setdefault("shutdown_grace", 5.0)
    worker = Worker(url, **options)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def main() -> None:
        async with worker:
            started.set()
            await worker._main  # type: ignore[misc]

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "worker did not start"
    try:
        yield worker
    finally:
        asyncio.run_coroutine_threadsafe(worker.stop(), loop).result(15)
        thread.join(15)
        loop.close()


def sitq_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t is not threading.main_thread()}


def test_same_api_blocking(mem_url: str) -> None:
    with SyncTaskQueue(mem_url) as queue, thread_worker(mem_url, queues=["default", "hi"]):
        job_id = queue.enqueue(tasks.add, 1, 2)
        assert isinstance(job_id, str)
        result = queue.get_result(job_id, timeout=10)
        assert result is not None and result.unwrap() == 3
        hi = queue.options(queue="hi", retries=1).enqueue(tasks.multiply, 2, 5)
        assert queue.get_result(hi, timeout=10).unwrap() == 10  # type: ignore[union-attr]
        ids = queue.enqueue_many(tasks.add, [(1, 1), {"a": 2, "b": 2}])
        assert [queue.get_result(i, timeout=10).unwrap() for i in ids] == [2, 4]  # type: ignore[union-attr]
        with queue.batch() as batch:
            b1 = batch.enqueue(tasks.add, 5, 5)
        assert batch.ids == [b1]
        assert queue.get_result(b1, timeout=10).unwrap() == 10  # type: ignore[union-attr]
        failed = queue.get_result(queue.enqueue(tasks.fail, "sync"), timeout=10)
        assert failed is not None
        with pytest.raises(TaskFailed, match="ValueError: sync"):
            failed.unwrap()
        with pytest.raises(JobNotFound):
            queue.get_result("unknown", timeout=None)
        later = queue.enqueue(tasks.noop, eta=datetime.now(UTC) + timedelta(hours=1))
        info = queue.inspect(later)
        assert info.state == "scheduled" and info.eta is not None and info.eta.tzinfo is UTC
        assert queue.stats(["default"])["default"].scheduled == 1
        assert queue.cancel(later) is True
        assert queue.inspect(later).state == "failed"
        with pytest.raises(JobNotFound):
            queue.inspect("unknown")
        assert queue.purge() >= 0


def test_task_decorator(mem_url: str) -> None:
    with SyncTaskQueue(mem_url) as queue, thread_worker(mem_url, queues=["default", "t"]):
        mul = queue.task(queue="t")(tasks.multiply)
        assert mul(3, 3) == 9  # runs here
        job_id = mul.enqueue(4, 4)
        assert queue.inspect(job_id).queue == "t"
        assert queue.get_result(job_id, timeout=10).unwrap() == 16  # type: ignore[union-attr]
        other = mul.options(queue="default").enqueue(2, 2)
        assert queue.get_result(other, timeout=10).unwrap() == 4  # type: ignore[union-attr]
        plain = queue.task(tasks.add)
        assert queue.get_result(plain.enqueue(1, 1), timeout=10).unwrap() == 2  # type: ignore[union-attr]


def test_many_threads_at_once(mem_url: str) -> None:
    with SyncTaskQueue(mem_url) as queue:
        def produce(n: int) -> list[str]:
            return [queue.enqueue(tasks.add, n, i) for i in range(50)]

        with ThreadPoolExecutor(8) as pool:
            ids = [i for chunk in pool.map(produce, range(8)) for i in chunk]
        assert len(ids) == len(set(ids)) == 400
        assert queue.stats()["default"].queued == 400
        with thread_worker(mem_url, concurrency=20), ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: queue.get_result(i, timeout=20), ids))
        assert all(r is not None and r.ok for r in results)
        assert sum(r.value for r in results if r) == sum(n * 50 + 1225 for n in range(8))


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_inside_a_running_event_loop(mem_url: str) -> None:
    """Calls from the thread pool of a running loop (``asyncio.to_thread``) work, while an
    async worker runs on that same loop."""
    queue = SyncTaskQueue(mem_url)
    try:
        async with Worker(mem_url, handle_signals=False, shutdown_grace=5):
            ids = await asyncio.gather(
                *(asyncio.to_thread(queue.enqueue, tasks.add, i, i) for i in range(20))
            )
            results = await asyncio.gather(
                *(asyncio.to_thread(queue.get_result, i, 10) for i in ids)
            )
        assert [r.unwrap() for r in results if r] == [2 * i for i in range(20)]
    finally:
        await asyncio.to_thread(queue.close)


def test_close_stops_its_thread(mem_url: str) -> None:
    before = sitq_threads()
    queue = SyncTaskQueue(mem_url)
    assert len(sitq_threads() - before) == 1, "one event-loop thread per queue"
    queue.enqueue(tasks.noop)
    queue.close()
    assert sitq_threads() - before == set()
    queue.close()  # idempotent
    with pytest.raises(SitqError, match="closed"):
        queue.enqueue(tasks.noop)
    for _ in range(10):
        with SyncTaskQueue(mem_url) as q:
            q.enqueue(tasks.noop)
    assert sitq_threads() - before == set()


def test_construction_errors_leak_no_thread() -> None:
    before = sitq_threads()
    with pytest.raises(NotInstalled, match="backend 'nosuchstore' is not installed"):
        SyncTaskQueue("nosuchstore://localhost/db")
    assert sitq_threads() - before == set()


def test_close_from_several_threads(mem_url: str) -> None:
    before = sitq_threads()
    queue = SyncTaskQueue(mem_url)
    queue.enqueue(tasks.noop)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: queue.close(), range(4)))
    assert sitq_threads() - before == set()


def test_an_unclosed_queue_stops_its_thread_when_collected(mem_url: str) -> None:
    import gc

    before = sitq_threads()
    queue = SyncTaskQueue(mem_url)
    queue.enqueue(tasks.noop)
    del queue
    gc.collect()
    assert sitq_threads() - before == set()


def test_an_unclosed_queue_stops_its_thread_when_dropped(mem_url: str) -> None:
    """A queue nobody closed (``SyncTaskQueue(url).enqueue(...)`` in a request handler)
    must free its event-loop thread when its last reference goes, not whenever the cyclic
    garbage collector happens to run: until then every such call leaks a thread."""
    import gc

    before = sitq_threads()
    gc.disable()
    try:
        for _ in range(3):
            SyncTaskQueue(mem_url).enqueue(tasks.noop)
        assert sitq_threads() - before == set()
    finally:
        gc.enable()


def test_close_does_not_wait_for_other_threads_calls(mem_url: str) -> None:
    """close() while another thread waits for a result ends that wait (it raises a
    SitqError saying the queue was closed) instead of blocking until the result comes."""
    queue = SyncTaskQueue(mem_url)
    job_id = queue.enqueue(tasks.noop)  # no worker: it never finishes
    outcome: dict[str, BaseException | object] = {}

    def wait() -> None:
        try:
            outcome["result"] = queue.get_result(job_id, timeout=None)
        except BaseException as exc:
            outcome["error"] = exc

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.2)
    closer = threading.Thread(target=queue.close, daemon=True)
    closer.start()
    closer.join(5)
    assert not closer.is_alive(), "close() hung behind another thread's get_result"
    waiter.join(5)
    assert isinstance(outcome.get("error"), SitqError), outcome
    assert "closed" in str(outcome["error"])
