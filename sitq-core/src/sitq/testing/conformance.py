"""BackendConformance: the one test suite every sitq backend passes.

A backend author subclasses it in a test module and provides ``backend_url``::

    from sitq.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend_url(self) -> str:
            return "mystore://127.0.0.1:9999/0"

The tests of the jobs' storage are here; those of the backend's life around them (the
contract's shape, key scope, purge, close, capability refusals, graceful shutdown) are in
:mod:`sitq.testing._lifecycle`, mixed in.

Every test uses its own queue names (so tests against a shared server never see each
other's data) and purges them afterwards. Tests of an optional capability skip with the
reason when the backend declares it does not have it. Requires ``pytest`` and ``anyio``
(its pytest plugin runs the async tests).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ..backend import Backend, Finish
from ..chain import Chain
from ..errors import JobNotFound, TaskFailed
from ..job import utcnow
from ..plugins import get_registry
from ..queue import TaskQueue
from ..worker import Worker
from . import tasks
from ._jobs import claim_all, make_job
from ._lifecycle import LifecycleTests

__all__ = ["BackendConformance", "make_job"]



def _claimer_process(
    url: str, queue: str, out: Any, stop_after: float, start: Any = None
) -> None:
    """Claim loop run in a child process by the multi-process test.

    ``start`` (a barrier) makes the children begin claiming together once all are
    connected, so a fast store is not drained by the first child to finish importing.
    """

    async def run() -> list[str]:
        backend = get_registry().backend(url)
        got: list[str] = []
        async with backend:
            if start is not None:
                await asyncio.to_thread(start.wait, 60)
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < stop_after:
                jobs = await backend.claim([queue], limit=5, lease=60, worker=str(os.getpid()))
                if jobs:
                    idle_since = time.monotonic()
                    got += [j.id for j in jobs]
                    await backend.finish_many([Finish(j, "success", b"r") for j in jobs])
                else:
                    await asyncio.sleep(0.01)
        return got

    out.put(asyncio.run(run()))


class BackendConformance(LifecycleTests):
    """The conformance suite. Subclass it and provide a ``backend_url`` fixture."""

    pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

    #: Seconds used for short leases; raise it for a slow store.
    short_lease: float = 1.0

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def backend_url(self) -> str:
        raise NotImplementedError("provide a backend_url fixture returning your backend's URL")

    @pytest.fixture
    def backend_options(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def unreachable_backend_url(self) -> str | None:
        """A URL of your backend whose store cannot be reached (a closed port), for the
        failed-connect test; ``None`` skips it."""
        return None

    @pytest.fixture
    def queue_name(self) -> str:
        return f"ct-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def make_backend(
        self, backend_url: str, backend_options: dict[str, Any]
    ) -> Callable[..., Backend]:
        def make(**options: Any) -> Backend:
            return get_registry().backend(backend_url, **{**backend_options, **options})

        return make

    @pytest.fixture
    async def backend(
        self, make_backend: Callable[..., Backend], queue_name: str
    ) -> AsyncIterator[Backend]:
        backend = make_backend()
        await backend.connect()
        await backend.purge([queue_name, queue_name + "-b"])
        try:
            yield backend
        finally:
            await backend.purge([queue_name, queue_name + "-b"])
            await backend.aclose()

    @pytest.fixture
    async def queue(self, backend: Backend) -> AsyncIterator[TaskQueue]:
        yield TaskQueue(backend)

    # ================================================================== storage level
    async def test_enqueue_claim_complete(self, backend: Backend, queue_name: str) -> None:
        job = make_job(queue_name, headers={"traceparent": "00-abc-def-01"})
        assert await backend.enqueue(job) == job.id
        [claimed] = await backend.claim([queue_name], limit=10, lease=30, worker="w1")
        assert claimed.id == job.id
        assert claimed.attempt == 1
        assert claimed.state == "running"
        assert claimed.worker == "w1"
        assert claimed.payload == job.payload
        assert claimed.headers == {"traceparent": "00-abc-def-01"}
        assert claimed.lease_until is not None and claimed.lease_until > utcnow()
        assert await backend.claim([queue_name], limit=10, lease=30, worker="w2") == []
        assert await backend.complete(claimed, b"result-bytes")
        assert await backend.get_result(job.id) == b"result-bytes"
        assert await backend.claim([queue_name], limit=10, lease=30, worker="w2") == []

    async def test_job_fields_round_trip(self, backend: Backend, queue_name: str) -> None:
        job = make_job(
            queue_name,
            payload=bytes(range(256)),
            headers={"a": "1", "ü": "ß"},
            priority=3,
            max_retries=4,
            timeout=2.5,
            key=f"k-{queue_name}",
            result_ttl=120.0,
            chain=b"\x01\x02",
        )
        await backend.enqueue(job)
        stored = await backend.get_job(job.id)
        assert stored is not None and stored.state == "queued"
        [claimed] = await claim_all(backend, queue_name)
        for field in ("id", "queue", "task", "payload", "serializer", "headers", "priority",
                      "max_retries", "timeout", "key", "result_ttl", "chain"):
            assert getattr(claimed, field) == getattr(job, field), field
        assert abs((claimed.created_at - job.created_at).total_seconds()) < 0.01

    async def test_fifo_within_priority(self, backend: Backend, queue_name: str) -> None:
        jobs = [make_job(queue_name) for _ in range(20)]
        await backend.enqueue_many(jobs)
        claimed = []
        for _ in range(4):
            claimed += await backend.claim([queue_name], limit=5, lease=30, worker="w")
        assert [j.id for j in claimed] == [j.id for j in jobs]

    async def test_priority(self, backend: Backend, queue_name: str) -> None:
        low = make_job(queue_name, priority=0)
        high = make_job(queue_name, priority=9)
        mid = make_job(queue_name, priority=5)
        await backend.enqueue_many([low, high, mid])
        order = [(await backend.claim([queue_name], limit=1, lease=30, worker="w"))[0].id
                 for _ in range(3)]
        assert order == [high.id, mid.id, low.id]

    async def test_claim_from_several_queues(self, backend: Backend, queue_name: str) -> None:
        a = make_job(queue_name)
        b = make_job(queue_name + "-b")
        await backend.enqueue_many([a, b])
        assert await backend.claim(["other-" + queue_name], limit=5, lease=30, worker="w") == []
        claimed = await backend.claim([queue_name, queue_name + "-b"], limit=5, lease=30,
                                      worker="w")
        assert {j.id for j in claimed} == {a.id, b.id}

    async def test_eta_not_claimed_before_due(self, backend: Backend, queue_name: str) -> None:
        later = make_job(queue_name, eta=utcnow() + timedelta(seconds=1.2))
        now = make_job(queue_name)
        await backend.enqueue_many([later, now])
        claimed = await claim_all(backend, queue_name)
        assert [j.id for j in claimed] == [now.id]
        stats = (await backend.stats([queue_name]))[queue_name]
        assert stats.scheduled == 1
        await asyncio.sleep(1.5)
        claimed = await claim_all(backend, queue_name)
        assert [j.id for j in claimed] == [later.id]

    async def test_due_jobs_in_eta_order(self, backend: Backend, queue_name: str) -> None:
        base = utcnow() - timedelta(minutes=5)
        jobs = [make_job(queue_name, eta=base + timedelta(seconds=s)) for s in (30, 10, 20)]
        await backend.enqueue_many(jobs)
        claimed = [(await backend.claim([queue_name], limit=1, lease=30, worker="w"))[0]
                   for _ in range(3)]
        assert [j.id for j in claimed] == [jobs[1].id, jobs[2].id, jobs[0].id]

    async def test_lease_expiry_redelivers_and_fences(
        self, backend: Backend, queue_name: str
    ) -> None:
        job = make_job(queue_name)
        await backend.enqueue(job)
        [first] = await backend.claim([queue_name], limit=1, lease=self.short_lease, worker="a")
        assert await backend.claim([queue_name], limit=1, lease=30, worker="b") == []
        await asyncio.sleep(self.short_lease + 0.3)
        [second] = await backend.claim([queue_name], limit=1, lease=30, worker="b")
        assert second.id == job.id
        assert second.attempt == first.attempt + 1
        assert second.lease_expiries == 1
        # The first worker comes back: its heartbeat and its result are both refused.
        assert await backend.extend([first], 30) == ["lost"]
        assert await backend.complete(first, b"stale") is False
        assert await backend.complete(second, b"fresh") is True
        assert await backend.get_result(job.id) == b"fresh"

    async def test_extend_keeps_the_lease(self, backend: Backend, queue_name: str) -> None:
        await backend.enqueue(make_job(queue_name))
        lease = self.short_lease
        [job] = await backend.claim([queue_name], limit=1, lease=lease, worker="a")
        for _ in range(3):
            await asyncio.sleep(lease / 2)
            assert await backend.extend([job], lease) == ["ok"]
        assert await backend.claim([queue_name], limit=1, lease=30, worker="b") == []
        assert await backend.complete(job, b"ok")

    async def test_retry_with_backoff(self, backend: Backend, queue_name: str) -> None:
        await backend.enqueue(make_job(queue_name, max_retries=2))
        [job] = await claim_all(backend, queue_name)
        job.failures += 1
        assert await backend.retry(job, 1.0)
        assert await claim_all(backend, queue_name) == []
        info = await backend.get_job(job.id)
        assert info is not None and info.state == "queued" and info.failures == 1
        await asyncio.sleep(1.3)
        [again] = await claim_all(backend, queue_name)
        assert again.id == job.id and again.attempt == 2 and again.failures == 1
        assert again.lease_expiries == 0
        assert await backend.retry(job, 0) is False  # stale attempt is fenced

    async def test_release_puts_job_back(self, backend: Backend, queue_name: str) -> None:
        await backend.enqueue(make_job(queue_name))
        [job] = await claim_all(backend, queue_name)
        assert await backend.release(job)
        [again] = await claim_all(backend, queue_name)
        assert again.id == job.id and again.failures == 0 and again.lease_expiries == 0

    async def test_idempotency_key(self, backend: Backend, queue_name: str) -> None:
        key = f"invoice-{queue_name}"
        first = make_job(queue_name, key=key)
        assert await backend.enqueue(first) == first.id
        assert await backend.enqueue(make_job(queue_name, key=key)) == first.id
        [claimed] = await claim_all(backend, queue_name)
        assert await backend.enqueue(make_job(queue_name, key=key)) == first.id  # running
        assert await backend.complete(claimed, b"done")
        again = make_job(queue_name, key=key)
        assert await backend.enqueue(again) == again.id  # finished: the key is free
        a, b = make_job(queue_name, key=key + "-x"), make_job(queue_name, key=key + "-x")
        ids = await backend.enqueue_many([a, b])
        assert ids == [a.id, a.id]

    async def test_result_wait(self, backend: Backend, queue_name: str) -> None:
        job = make_job(queue_name)
        await backend.enqueue(job)
        assert await backend.wait_result(job.id, 0) is None
        started = time.monotonic()
        assert await backend.wait_result(job.id, 0.3) is None
        assert time.monotonic() - started >= 0.25
        [claimed] = await claim_all(backend, queue_name)

        async def finish_later() -> None:
            await asyncio.sleep(0.2)
            await backend.complete(claimed, b"value")

        task = asyncio.create_task(finish_later())
        started = time.monotonic()
        assert await backend.wait_result(job.id, 10) == b"value"
        assert time.monotonic() - started < 5
        await task

    async def test_result_ttl(self, backend: Backend, queue_name: str) -> None:
        await backend.enqueue(make_job(queue_name, result_ttl=1.0))
        [job] = await claim_all(backend, queue_name)
        await backend.complete(job, b"short-lived")
        assert await backend.get_result(job.id) == b"short-lived"
        await asyncio.sleep(2.1)
        assert await backend.get_result(job.id) is None

    async def test_cancel(self, backend: Backend, queue_name: str) -> None:
        queued = make_job(queue_name)
        running = make_job(queue_name)
        await backend.enqueue(running)
        [claimed] = await claim_all(backend, queue_name)
        await backend.enqueue(queued)
        assert await backend.cancel(queued.id, b"cancelled") == "cancelled"
        assert await backend.get_result(queued.id) == b"cancelled"
        assert await claim_all(backend, queue_name) == []
        assert await backend.cancel(running.id, b"cancelled") == "requested"
        assert await backend.extend([claimed], 30) == ["cancel"]
        await backend.fail(claimed, b"stopped")
        assert await backend.cancel(running.id, b"cancelled") == "finished"
        assert await backend.cancel("no-such-job-" + queue_name, b"x") == "not_found"

    async def test_stats_and_purge(self, backend: Backend, queue_name: str) -> None:
        await backend.enqueue_many([make_job(queue_name) for _ in range(3)])
        await backend.enqueue(make_job(queue_name, eta=utcnow() + timedelta(hours=1)))
        await backend.claim([queue_name], limit=1, lease=30, worker="w")
        stats = (await backend.stats([queue_name]))[queue_name]
        assert (stats.queued, stats.scheduled, stats.running) == (2, 1, 1)
        assert queue_name in await backend.stats()
        assert await backend.purge([queue_name]) >= 4
        stats = (await backend.stats([queue_name]))[queue_name]
        assert (stats.queued, stats.scheduled, stats.running) == (0, 0, 0)
        assert await claim_all(backend, queue_name) == []

    async def test_get_job_states(self, backend: Backend, queue_name: str) -> None:
        job = make_job(queue_name)
        assert await backend.get_job(job.id) is None
        await backend.enqueue(job)
        stored = await backend.get_job(job.id)
        assert stored is not None and stored.state == "queued"
        [_claimed] = await claim_all(backend, queue_name)
        stored = await backend.get_job(job.id)
        assert stored is not None and stored.state == "running" and stored.attempt == 1

    async def test_concurrent_claimers_never_share_a_job(
        self, make_backend: Callable[..., Backend], backend: Backend, queue_name: str
    ) -> None:
        jobs = [make_job(queue_name) for _ in range(300)]
        await backend.enqueue_many(jobs)
        claimers = [make_backend() for _ in range(6)]

        async def loop(b: Backend) -> list[str]:
            got: list[str] = []
            async with b:
                while True:
                    batch = await b.claim([queue_name], limit=7, lease=60, worker=str(id(b)))
                    if not batch:
                        return got
                    got += [j.id for j in batch]
                    await b.finish_many([Finish(j, "success", b"r") for j in batch])

        results = await asyncio.gather(*(loop(b) for b in claimers))
        claimed = [i for r in results for i in r]
        assert len(claimed) == len(set(claimed)) == len(jobs)

    async def test_concurrent_claimer_processes_never_share_a_job(
        self, backend: Backend, backend_url: str, queue_name: str
    ) -> None:
        if not backend.supports_multiprocess:
            pytest.skip(f"{type(backend).__name__} is in-process only (supports_multiprocess)")
        jobs = [make_job(queue_name) for _ in range(300)]
        await backend.enqueue_many(jobs)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        start = ctx.Barrier(3)
        procs = [ctx.Process(target=_claimer_process,
                             args=(backend_url, queue_name, out, 1.5, start))
                 for _ in range(3)]
        for p in procs:
            p.start()
        results = []
        for _ in procs:
            results.append(await asyncio.to_thread(out.get, True, 60))
        for p in procs:
            await asyncio.to_thread(p.join, 10)
        claimed = [i for r in results for i in r]
        assert len(claimed) == len(set(claimed)) == len(jobs)
        assert sum(1 for r in results if r) >= 2, "expected several processes to get work"

    async def test_claim_tick_once(
        self, make_backend: Callable[..., Backend], backend: Backend, queue_name: str
    ) -> None:
        tick = utcnow().replace(microsecond=0)
        others = [make_backend() for _ in range(4)]
        try:
            results = await asyncio.gather(
                *(b.claim_tick(f"sched-{queue_name}", tick) for b in [backend, *others])
            )
        finally:
            for b in others:
                await b.aclose()
        assert sorted(results) == [False, False, False, False, True]
        assert await backend.claim_tick(f"sched-{queue_name}", tick + timedelta(minutes=1))
        assert not await backend.claim_tick(f"sched-{queue_name}", tick)

    async def test_dead_letters(self, backend: Backend, queue_name: str) -> None:
        if not backend.supports_dead_letters:
            pytest.skip(f"{type(backend).__name__} does not keep dead letters")
        job = make_job(queue_name)
        await backend.enqueue(job)
        [claimed] = await claim_all(backend, queue_name)
        await backend.fail(claimed, b"failed-result")
        dead = await backend.dead_letters(queue_name)
        assert [j.id for j in dead] == [job.id]
        assert (await backend.stats([queue_name]))[queue_name].failed == 1
        assert await backend.requeue(job.id)
        assert await backend.dead_letters(queue_name) == []
        [again] = await claim_all(backend, queue_name)
        assert again.id == job.id
        assert await backend.get_result(job.id) is None

    # ================================================================== with a worker
    async def test_worker_runs_jobs_end_to_end(
        self, backend: Backend, queue: TaskQueue, queue_name: str
    ) -> None:
        q = queue.options(queue=queue_name)
        ok = await q.enqueue(tasks.add, 2, 3)
        sync = await q.enqueue(tasks.multiply, 4, 5)
        bad = await q.enqueue(tasks.fail, "expected failure")
        async with Worker(backend, queues=[queue_name], handle_signals=False, concurrency=4):
            r_ok = await queue.get_result(ok, timeout=15)
            r_sync = await queue.get_result(sync, timeout=15)
            r_bad = await queue.get_result(bad, timeout=15)
        assert r_ok is not None and r_ok.status == "success" and r_ok.value == 5
        assert r_sync is not None and r_sync.unwrap() == 20
        assert r_bad is not None and r_bad.status == "failed"
        assert str(r_bad.error) == "ValueError: expected failure"
        assert "def fail" in (r_bad.traceback or "") or "raise ValueError" in (
            r_bad.traceback or ""
        )
        with pytest.raises(TaskFailed, match="expected failure"):
            r_bad.unwrap()
        assert r_ok.started_at is not None and r_ok.finished_at is not None
        assert r_ok.finished_at.tzinfo is not None and r_ok.attempts == 1

    async def test_worker_retries_then_succeeds(
        self, backend: Backend, queue: TaskQueue, queue_name: str, tmp_path: Path
    ) -> None:
        log = tmp_path / "runs"
        job_id = await queue.options(queue=queue_name, retries=3).enqueue(
            tasks.flaky, str(log), 2
        )
        async with Worker(backend, queues=[queue_name], handle_signals=False,
                          retry_backoff=0.05, retry_backoff_max=0.2):
            result = await queue.get_result(job_id, timeout=20)
        assert result is not None and result.unwrap() == 3
        assert result.attempts == 3
        assert len(log.read_text().splitlines()) == 3

    async def test_worker_timeout(
        self, backend: Backend, queue: TaskQueue, queue_name: str
    ) -> None:
        job_id = await queue.options(queue=queue_name, timeout=0.3).enqueue(tasks.sleep, 30)
        async with Worker(backend, queues=[queue_name], handle_signals=False):
            result = await queue.get_result(job_id, timeout=15)
        assert result is not None and result.status == "failed"
        assert result.error is not None and result.error.type == "TaskTimeout"

    async def test_chain_runs_step_by_step(
        self, backend: Backend, queue: TaskQueue, queue_name: str
    ) -> None:
        ids = await (Chain(queue.options(queue=queue_name)).then(tasks.add, 1, 2)
                     .then(tasks.multiply, 10).then(tasks.fail).then(tasks.add, 1).ids())
        async with Worker(backend, queues=[queue_name], handle_signals=False):
            results = [await queue.get_result(i, timeout=15) for i in ids]
        assert [r.status if r else None for r in results] == [
            "success", "success", "failed", "failed"]
        assert results[1] is not None and results[1].value == 30
        assert results[3] is not None and results[3].error is not None
        assert results[3].error.type == "ChainFailed"

    async def test_cancel_through_the_queue(
        self, backend: Backend, queue: TaskQueue, queue_name: str
    ) -> None:
        job_id = await queue.options(queue=queue_name, delay=60).enqueue(tasks.noop)
        assert await queue.cancel(job_id) is True
        result = await queue.get_result(job_id)
        assert result is not None and result.error is not None
        assert result.error.type == "Cancelled"
        assert (await queue.inspect(job_id)).state == "failed"
        with pytest.raises(JobNotFound):
            await queue.inspect("unknown-" + queue_name)

    async def test_worker_killed_mid_job_runs_again(
        self, backend: Backend, backend_url: str, queue: TaskQueue, queue_name: str,
        tmp_path: Path,
    ) -> None:
        """A ``sitq worker`` SIGKILLed mid-job: the job runs again once its lease expires
        and ends with exactly one success."""
        if not backend.supports_multiprocess:
            pytest.skip(f"{type(backend).__name__} is in-process only (supports_multiprocess)")
        job_id = await queue.options(queue=queue_name).enqueue(
            tasks.marker_then_sleep, str(tmp_path), "job", 1.0
        )
        cmd = [sys.executable, "-m", "sitq", "worker", "--backend", backend_url,
               "--queue", queue_name, "--lease", "1.5"]
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not list(tmp_path.glob("started-job-*")):
                assert time.monotonic() < deadline, "the worker never started the job"
                assert first.poll() is None, "the worker exited early"
                await asyncio.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        assert not list(tmp_path.glob("done-job-*"))
        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            result = await queue.get_result(job_id, timeout=30)
        finally:
            second.terminate()
            second.wait(15)
        assert result is not None and result.status == "success", result
        assert result.attempts == 2
        assert len(list(tmp_path.glob("started-job-*"))) == 2
        assert len(list(tmp_path.glob("done-job-*"))) == 1
