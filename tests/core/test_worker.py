"""Worker behaviour (DESIGN §4, §6, §10): concurrency, timeouts, retries, leases,
graceful shutdown, and surviving a failing store."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sitq import BackendUnavailable, TaskQueue, Worker
from sitq.backends.memory import MemoryBackend
from sitq.job import Job, utcnow
from sitq.testing import tasks

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


# --------------------------------------------------------------------- helpers and tasks
_gauge_lock = threading.Lock()
_gauge = {"now": 0, "max": 0, "runs": 0}


def _enter() -> None:
    with _gauge_lock:
        _gauge["now"] += 1
        _gauge["runs"] += 1
        _gauge["max"] = max(_gauge["max"], _gauge["now"])


def _leave() -> None:
    with _gauge_lock:
        _gauge["now"] -= 1


async def gauged(seconds: float) -> None:
    _enter()
    try:
        await asyncio.sleep(seconds)
    finally:
        _leave()


def gauged_sync(seconds: float) -> None:
    _enter()
    try:
        time.sleep(seconds)
    finally:
        _leave()


async def slow_first_time(marker: str) -> str:
    """Hangs on its first run (leaving a marker); returns at once on later runs."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        await asyncio.sleep(60)
        return "first run"
    return "later run"


async def wait_until(predicate: Any, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not await predicate():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def state_of(queue: TaskQueue, job_id: str) -> str:
    return (await queue.inspect(job_id)).state


class FlakyBackend(MemoryBackend):
    """A MemoryBackend whose first N claims / finishes / heartbeats raise."""

    def __init__(self, name: str, *, fail_claims: int = 0, fail_finishes: int = 0,
                 fail_extends: int = 0, fail_connect: bool = False,
                 fail_waits: int = 0) -> None:
        super().__init__(name, url=f"flaky://{name}")
        self.fail_waits = fail_waits
        self.claims = 0
        self.fail_claims = fail_claims
        self.fail_finishes = fail_finishes
        self.fail_extends = fail_extends
        self.fail_connect = fail_connect
        self.failures: list[str] = []

    def _maybe_fail(self, what: str) -> None:
        left = getattr(self, f"fail_{what}")
        if left:
            setattr(self, f"fail_{what}", left - 1)
            self.failures.append(what)
            raise BackendUnavailable(f"store is down ({what})")

    async def _connect(self) -> None:
        if self.fail_connect:
            raise BackendUnavailable("cannot reach the store at flaky://")

    async def _claim(self, queues: list[str], limit: int, lease: float, worker: str) -> list[Job]:
        self.claims += 1
        self._maybe_fail("claims")
        return await super()._claim(queues, limit, lease, worker)

    async def _finish(self, items: Any) -> list[bool]:
        self._maybe_fail("finishes")
        return await super()._finish(items)

    async def wait_for_jobs(self, queues: Any, timeout: float) -> None:
        self._maybe_fail("waits")
        await super().wait_for_jobs(queues, timeout)

    async def _extend(self, jobs: Any, lease: float) -> Any:
        self._maybe_fail("extends")
        return await super()._extend(jobs, lease)


# --------------------------------------------------------------------- concurrency
@pytest.mark.parametrize(("func", "limit"), [(gauged, 3), (gauged_sync, 2)])
async def test_concurrency_is_bounded(queue: TaskQueue, run_worker: Any, func: Any,
                                      limit: int) -> None:
    _gauge.update(now=0, max=0, runs=0)
    ids = await queue.enqueue_many(func, [(0.1,)] * (limit * 4))
    async with run_worker(concurrency=limit):
        for job_id in ids:
            result = await queue.get_result(job_id, timeout=15)
            assert result is not None and result.ok
    assert _gauge["runs"] == limit * 4
    assert _gauge["max"] == limit, f"ran {_gauge['max']} at once with concurrency={limit}"


# --------------------------------------------------------------------- timeouts
@pytest.mark.parametrize("func", [tasks.sleep, tasks.sleep_sync])
async def test_timeout(queue: TaskQueue, run_worker: Any, func: Any) -> None:
    async with run_worker() as worker:
        started = time.monotonic()
        job_id = await queue.options(timeout=0.3).enqueue(func, 1.5 if func is tasks.sleep_sync
                                                          else 30)
        result = await queue.get_result(job_id, timeout=10)
        elapsed = time.monotonic() - started
        good = await queue.get_result(await queue.enqueue(tasks.add, 2, 2), timeout=10)
    assert result is not None and result.status == "failed"
    assert result.error is not None and result.error.type == "TaskTimeout"
    assert result.error.message == "the job ran longer than its timeout of 0.3s"
    assert result.error.module == "sitq.errors"
    assert elapsed < 1.4, "the job must end at its deadline"
    assert good is not None and good.unwrap() == 4
    assert worker.counters.failed == 1


async def test_timeout_counts_as_a_failure_for_retries(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker(retry_backoff=0.01):
        job_id = await queue.options(timeout=0.2, retries=1).enqueue(tasks.sleep, 30)
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.error is not None
    assert result.error.type == "TaskTimeout" and result.attempts == 2


# --------------------------------------------------------------------- retries
async def test_retries_then_final_failure(queue: TaskQueue, run_worker: Any,
                                          tmp_path: Path) -> None:
    log = tmp_path / "runs"
    async with run_worker(retry_backoff=0.02, retry_backoff_max=0.05) as worker:
        job_id = await queue.options(retries=2).enqueue(tasks.flaky, str(log), 10)
        result = await queue.get_result(job_id, timeout=10)
        good = await queue.get_result(await queue.enqueue(tasks.add, 1, 1), timeout=10)
    assert log.read_text().splitlines() == ["run"] * 3
    assert result is not None and result.status == "failed" and result.attempts == 3
    assert str(result.error) == "RuntimeError: flaky failure 3"
    assert result.traceback is not None and "flaky failure 3" in result.traceback
    [dead] = await queue.backend.dead_letters("default")
    assert dead.id == job_id and dead.failures == 3 and dead.lease_expiries == 0
    assert (worker.counters.retried, worker.counters.failed) == (2, 1)
    assert good is not None and good.ok


async def test_retries_then_success(queue: TaskQueue, run_worker: Any, tmp_path: Path) -> None:
    async with run_worker(retry_backoff=0.02):
        job_id = await queue.options(retries=3).enqueue(tasks.flaky, str(tmp_path / "r"), 2)
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.unwrap() == 3 and result.attempts == 3


async def test_short_backoffs_are_not_stretched_by_polling(queue: TaskQueue, run_worker: Any,
                                                           tmp_path: Path) -> None:
    """The worker wakes when a retry is due, not only at its next 1 s poll."""
    async with run_worker(retry_backoff=0.02, retry_backoff_max=0.05):
        started = time.monotonic()
        job_id = await queue.options(retries=3).enqueue(tasks.flaky, str(tmp_path / "r"), 3)
        result = await queue.get_result(job_id, timeout=10)
        elapsed = time.monotonic() - started
    assert result is not None and result.unwrap() == 4
    assert elapsed < 1.5, f"3 retries of <= 50 ms back-off took {elapsed:.2f}s"
    store = queue.backend._s  # type: ignore[attr-defined]
    assert store.job_waiters._items == [], "a stopped worker leaves no waiter behind"


def test_backoff_is_exponential_capped_full_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker("memory://backoff", retry_backoff=1.0, retry_backoff_max=5.0,
                    handle_signals=False)
    bounds: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    monkeypatch.setattr("sitq._execute.random.uniform", uniform)
    job = Job(id="j", queue="q", task="t:t", payload=b"", serializer="json", max_retries=10)
    delays = [worker._attempts.on_error(job, ValueError("x"), None, utcnow()).retry_delay
              for _ in range(5)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert all(low == 0 for low, _ in bounds), "full jitter: anywhere from 0 to the cap"
    assert job.failures == 5


async def test_retry_waits_for_its_backoff(queue: TaskQueue, run_worker: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sitq._execute.random.uniform", lambda low, high: high)
    async with run_worker(retry_backoff=0.5):
        job_id = await queue.options(retries=1).enqueue(tasks.flaky, str(tmp_path / "r"), 1)
        await wait_until(lambda: _is_scheduled(queue, job_id))
        started = time.monotonic()
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.unwrap() == 2
    assert time.monotonic() - started > 0.3


async def _is_scheduled(queue: TaskQueue, job_id: str) -> bool:
    return await state_of(queue, job_id) == "scheduled"


# --------------------------------------------------------------------- leases
async def _expire(queue: TaskQueue, times: int) -> None:
    """Simulate workers that take the job and die: claim with a short lease, let it lapse."""
    for _ in range(times):
        claimed = await queue.backend.claim(["default"], limit=1, lease=0.2, worker="dead")
        assert len(claimed) == 1
        await asyncio.sleep(0.3)


async def test_lease_expiries_end_in_worker_lost(queue: TaskQueue, run_worker: Any) -> None:
    job_id = await queue.options(retries=5).enqueue(tasks.add, 1, 2)
    await _expire(queue, 3)
    async with run_worker(max_lease_expiries=3):
        result = await queue.get_result(job_id, timeout=10)
        good = await queue.get_result(await queue.enqueue(tasks.add, 1, 1), timeout=10)
    assert result is not None and result.status == "failed"
    assert result.error is not None and result.error.type == "WorkerLost"
    assert "expired 3 times (max_lease_expiries=3)" in result.error.message
    assert "raise the lease" in result.error.message
    assert result.attempts == 4
    [dead] = await queue.backend.dead_letters("default")
    assert dead.failures == 0, "lease expiries do not consume retries"
    assert good is not None and good.ok


async def test_fewer_lease_expiries_run_the_job_again(queue: TaskQueue, run_worker: Any) -> None:
    job_id = await queue.enqueue(tasks.add, 1, 2)
    await _expire(queue, 2)
    async with run_worker():  # default max_lease_expiries=3
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.unwrap() == 3 and result.attempts == 3


async def test_heartbeats_keep_a_long_job_leased(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker(lease=0.9) as worker:
        job_id = await queue.enqueue(tasks.sleep, 2.0)
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.unwrap() == 2.0 and result.attempts == 1
    assert worker.counters.lost == 0


async def test_a_lost_lease_never_gives_two_results(mem_url: str) -> None:
    """A worker that cannot heartbeat loses its lease to another claimer; its late result
    is refused (fenced), so the job keeps the one result of the new owner."""
    backend = FlakyBackend(mem_url.split("://")[1], fail_extends=100)
    queue = TaskQueue(backend)
    job_id = await queue.enqueue(tasks.sleep, 1.0)
    async with Worker(backend, lease=0.3, handle_signals=False) as worker:
        await wait_until(lambda: _is_running(queue, job_id))
        await asyncio.sleep(0.4)  # the lease lapses: no heartbeat got through
        [taken] = await backend.claim(["default"], lease=30, worker="other")
        assert taken.lease_expiries == 1
        # The first worker finishes and tries to record its result: refused.
        await wait_until(lambda: _lost(worker))
        assert await queue.get_result(job_id) is None
        assert "extends" in backend.failures


async def _lost(worker: Worker) -> bool:
    return worker.counters.lost == 1


async def _is_running(queue: TaskQueue, job_id: str) -> bool:
    return await state_of(queue, job_id) == "running"


# --------------------------------------------------------------------- graceful shutdown
async def test_stop_lets_running_jobs_finish(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker() as worker:
        job_id = await queue.enqueue(tasks.sleep, 0.5)
        await wait_until(lambda: _is_running(queue, job_id))
        started = time.monotonic()
        await worker.stop(grace=10)
        assert time.monotonic() - started >= 0.3
    result = await queue.get_result(job_id)
    assert result is not None and result.unwrap() == 0.5
    assert worker.counters.released == 0


async def test_stop_releases_jobs_after_grace(queue: TaskQueue, run_worker: Any,
                                              tmp_path: Path) -> None:
    marker = tmp_path / "started"
    async with run_worker() as first:
        job_id = await queue.options(retries=0).enqueue(slow_first_time, str(marker))
        await wait_until(lambda: _is_running(queue, job_id))
        started = time.monotonic()
        await first.stop(grace=0.3)
        assert time.monotonic() - started < 2
    info = await queue.inspect(job_id)
    assert info.state == "queued", "released back to the queue, not lost"
    job = await queue.backend.get_job(job_id)
    assert job is not None and job.failures == 0 and job.lease_expiries == 0
    assert (first.counters.released, first.counters.failed) == (1, 0)
    assert await queue.get_result(job_id) is None
    async with run_worker():
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.unwrap() == "later run"
    assert result.attempts == 2


async def test_stop_releases_a_thread_job_after_grace(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker() as worker:
        job_id = await queue.enqueue(tasks.sleep_sync, 1.5)
        await wait_until(lambda: _is_running(queue, job_id))
        started = time.monotonic()
        await worker.stop(grace=0.2)
        assert time.monotonic() - started < 1.2
    assert await state_of(queue, job_id) == "queued"
    assert worker.counters.released == 1


async def test_second_signal_stops_at_once(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker(shutdown_grace=30) as worker:
        job_id = await queue.enqueue(tasks.sleep, 30)
        await wait_until(lambda: _is_running(queue, job_id))
        worker._shutdown.on_signal(signal.SIGTERM)  # drain: up to 30 s
        await asyncio.sleep(0.3)
        assert await state_of(queue, job_id) == "running"
        started = time.monotonic()
        worker._shutdown.on_signal(signal.SIGTERM)  # second signal: release now
        await asyncio.wait_for(worker._main, 5)  # type: ignore[arg-type]
        assert time.monotonic() - started < 2
    assert await state_of(queue, job_id) == "queued"
    assert worker.counters.released == 1


async def test_stop_with_a_shorter_grace_while_draining(queue: TaskQueue,
                                                        run_worker: Any) -> None:
    async with run_worker(shutdown_grace=30) as worker:
        job_id = await queue.enqueue(tasks.sleep, 30)
        await wait_until(lambda: _is_running(queue, job_id))
        first = asyncio.create_task(worker.stop())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await asyncio.wait_for(worker.stop(grace=0), 5)
        assert time.monotonic() - started < 2
        await first
    assert await state_of(queue, job_id) == "queued"


async def test_cancelling_start_releases_running_jobs(queue: TaskQueue) -> None:
    """``wait_for(worker.start(), t)`` timing out must not leave job tasks behind."""
    job_id = await queue.enqueue(tasks.sleep, 30)
    worker = Worker(queue.backend, handle_signals=False, shutdown_grace=30)
    before = len(asyncio.all_tasks())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(worker.start(), 0.5)
    assert len(asyncio.all_tasks()) == before, "orphaned job tasks"
    assert await state_of(queue, job_id) == "queued"
    assert worker.counters.released == 1


async def test_burst_mode_exits_when_idle(queue: TaskQueue) -> None:
    ids = await queue.enqueue_many(tasks.add, [(i, i) for i in range(5)])
    worker = Worker(queue.backend, burst=True, handle_signals=False)
    await asyncio.wait_for(worker.start(), 10)
    assert [r.unwrap() for r in [await queue.get_result(i) for i in ids] if r] == [
        0, 2, 4, 6, 8]


class SilentBackend(MemoryBackend):
    """A store that never announces new jobs (``wait_for_jobs`` waits until cancelled) and
    takes a moment to record a finish, as a store across a network does."""

    async def wait_for_jobs(self, queues: Any, timeout: float) -> None:
        await asyncio.Event().wait()

    async def _finish(self, items: Any) -> list[bool]:
        await asyncio.sleep(0.02)
        return await super()._finish(items)


async def test_burst_mode_exits_once_the_last_result_is_recorded(mem_url: str) -> None:
    """The last attempts are recorded after their slots are free: a burst worker notices
    that, instead of waiting for the store to announce work that will never come."""
    backend = SilentBackend(mem_url.split("://")[1])
    async with TaskQueue(backend) as queue:
        ids = await queue.enqueue_many(tasks.add, [(i, i) for i in range(30)])
        worker = Worker(backend, burst=True, concurrency=7, handle_signals=False)
        await asyncio.wait_for(worker.start(), 10)
        assert [(await queue.get_result(i)).unwrap() for i in ids] == [  # type: ignore[union-attr]
            i * 2 for i in range(30)]


# --------------------------------------------------------------------- a failing store
async def test_worker_survives_failing_claims(mem_url: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    backend = FlakyBackend(mem_url.split("://")[1], fail_claims=3)
    queue = TaskQueue(backend)
    with caplog.at_level(logging.WARNING, logger="sitq.worker"):
        async with Worker(backend, handle_signals=False) as worker:
            result = await queue.get_result(await queue.enqueue(tasks.add, 1, 2), timeout=15)
            again = await queue.get_result(await queue.enqueue(tasks.add, 2, 2), timeout=15)
    assert backend.failures == ["claims"] * 3
    assert result is not None and result.unwrap() == 3
    assert again is not None and again.unwrap() == 4
    assert "store is down (claims)" in caplog.text
    assert worker.counters.succeeded == 2


async def test_worker_survives_failing_finishes_and_heartbeats(mem_url: str) -> None:
    backend = FlakyBackend(mem_url.split("://")[1], fail_finishes=3, fail_extends=2)
    queue = TaskQueue(backend)
    async with Worker(backend, lease=0.3, handle_signals=False):
        long = await queue.enqueue(tasks.sleep, 0.6)
        short = await queue.enqueue(tasks.add, 1, 2)
        results = [await queue.get_result(i, timeout=15) for i in (long, short)]
    assert [r.unwrap() for r in results if r] == [0.6, 3]
    assert backend.failures.count("finishes") == 3


@pytest.mark.timeout(40)
async def test_stop_does_not_hang_when_results_cannot_be_recorded(mem_url: str) -> None:
    """A store that refuses every write at shutdown: stop() still returns, and the job
    (still leased, unrecorded) runs again elsewhere once its lease expires."""
    backend = FlakyBackend(mem_url.split("://")[1], fail_finishes=1_000_000)
    queue = TaskQueue(backend)
    job_id = await queue.enqueue(tasks.add, 1, 2)
    async with Worker(backend, lease=1.0, handle_signals=False) as worker:
        await wait_until(lambda: _has_failed_finish(backend))
        started = time.monotonic()
        await asyncio.wait_for(worker.stop(grace=0.5), 20)
        assert time.monotonic() - started < 15
    assert await state_of(queue, job_id) == "running"
    backend.fail_finishes = 0  # the store recovers
    async with Worker(backend, handle_signals=False):
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.unwrap() == 3 and result.attempts == 2


async def _has_failed_finish(backend: FlakyBackend) -> bool:
    return "finishes" in backend.failures


async def test_failing_wake_ups_fall_back_to_polling(mem_url: str) -> None:
    """If the store's wake-up channel fails, the worker polls; it does not spin on claim."""
    backend = FlakyBackend(mem_url.split("://")[1], fail_waits=1_000_000)
    queue = TaskQueue(backend)
    async with Worker(backend, handle_signals=False):
        await asyncio.sleep(0.5)
        assert backend.claims < 10, f"{backend.claims} claims in 0.5 s while idle"
        result = await queue.get_result(await queue.enqueue(tasks.add, 1, 2), timeout=10)
    assert result is not None and result.unwrap() == 3


async def test_unreachable_store_at_start(mem_url: str) -> None:
    backend = FlakyBackend(mem_url.split("://")[1], fail_connect=True)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    worker = Worker(backend, handle_signals=True)
    with pytest.raises(BackendUnavailable, match="cannot reach the store"):
        await worker.start()
    with pytest.raises(BackendUnavailable):
        async with Worker(backend, handle_signals=False):
            pass
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before, \
        "signal handlers must be removed when start fails"


# --------------------------------------------------------------------- review findings
class SlowReplyBackend(MemoryBackend):
    """A store whose write lands at once but whose reply takes 50 ms, as over a network;
    it has no wake-up channel, so the worker polls."""

    async def _finish(self, items: Any) -> list[bool]:
        out = await super()._finish(items)
        await asyncio.sleep(0.05)
        return out

    async def wait_for_jobs(self, queues: Any, timeout: float) -> None:
        await asyncio.sleep(0.01)


def fail_once_then_work(path: str, seconds: float) -> str:
    log = Path(path)
    runs = len(log.read_text().split()) if log.exists() else 0
    with log.open("a") as fh:
        fh.write("run\n")
    if runs == 0:
        raise RuntimeError("first run fails")
    time.sleep(seconds)
    return "done"


async def test_a_quick_retry_keeps_heartbeating_the_next_attempt(mem_url: str,
                                                                  tmp_path: Path) -> None:
    """The retry is recorded and re-claimed by this worker before the first attempt's task
    has left _active; its cleanup must not remove the second attempt's entry (no heartbeat
    -> lost lease -> the job runs again, twice at once)."""
    backend = SlowReplyBackend(mem_url.split("://")[1])
    queue = TaskQueue(backend)
    log = tmp_path / "runs"
    job_id = await queue.options(retries=1).enqueue(fail_once_then_work, str(log), 1.0)
    async with Worker(backend, lease=0.3, retry_backoff=0.0, concurrency=4,
                      shutdown_grace=3, handle_signals=False) as worker:
        result = await queue.get_result(job_id, timeout=10)
        await asyncio.sleep(0.3)
    assert result is not None and result.unwrap() == "done"
    assert log.read_text().split() == ["run", "run"], "the job ran more than twice"
    assert worker.counters.lost == 0


async def _awaits_a_cancelled_future() -> None:
    """What a client library can do: a future it awaits is cancelled under it."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


async def test_a_task_raising_cancelled_error_fails_its_job(queue: TaskQueue,
                                                            run_worker: Any) -> None:
    async with run_worker(lease=1.5, shutdown_grace=1) as worker:
        job_id = await queue.enqueue(_awaits_a_cancelled_future)
        result = await queue.get_result(job_id, timeout=3)
        good = await queue.get_result(await queue.enqueue(tasks.add, 1, 1), timeout=5)
    assert result is not None and result.status == "failed", "the job never finished"
    assert result.error is not None and result.error.type == "CancelledError"
    assert result.attempts == 1 and worker.counters.claimed == 2
    assert good is not None and good.ok


async def test_a_timed_out_thread_does_not_starve_later_jobs(queue: TaskQueue,
                                                             run_worker: Any) -> None:
    async with run_worker(concurrency=1, shutdown_grace=1):
        hung = await queue.options(timeout=0.2).enqueue(tasks.sleep_sync, 2)
        first = await queue.get_result(hung, timeout=10)
        after = await queue.options(timeout=1).enqueue(tasks.multiply, 6, 7)
        result = await queue.get_result(after, timeout=10)
    assert first is not None and first.error is not None
    assert first.error.type == "TaskTimeout"
    assert result is not None and result.value == 42, result


async def test_a_cancelled_job_whose_worker_died_does_not_run_again(queue: TaskQueue,
                                                                     tmp_path: Path) -> None:
    log = tmp_path / "runs"
    job_id = await queue.enqueue(tasks.record, str(log), "ran")
    await queue.backend.claim(["default"], lease=0.1, worker="dies")  # ...and it dies
    assert await queue.cancel(job_id) is True  # "asked to stop": the user expects no run
    await asyncio.sleep(0.2)  # the dead worker's lease expires
    await Worker(queue.backend, burst=True, handle_signals=False).start()
    result = await queue.get_result(job_id, timeout=5)
    assert not log.exists(), "the cancelled job ran again"
    assert result is not None and result.error is not None
    assert result.error.type == "Cancelled"
