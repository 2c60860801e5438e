"""MemoryBackend passes the conformance suite."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sitq import JobNotFound, TaskQueue, Worker
from sitq.backends.memory import MemoryBackend
from sitq.testing import BackendConformance, tasks


class TestMemoryBackend(BackendConformance):
    @pytest.fixture
    def backend_url(self) -> str:
        return f"memory://conformance-{uuid.uuid4().hex[:8]}"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_dead_letter_expires_with_its_result() -> None:
    """As in SQLite (and the docs: after result_ttl, inspect raises JobNotFound), a failed
    job is gone everywhere once its result has expired."""
    url = f"memory://expiry-{uuid.uuid4().hex[:8]}"
    async with TaskQueue(url) as queue:
        job_id = await queue.options(result_ttl=0.3).enqueue(tasks.fail, "x")
        await Worker(url, burst=True, handle_signals=False).start()
        assert (await queue.inspect(job_id)).state == "failed"
        await asyncio.sleep(0.5)
        assert (await queue.stats(["default"]))["default"].failed == 0
        assert await queue.backend.dead_letters("default") == []
        with pytest.raises(JobNotFound):
            await queue.inspect(job_id)
        with pytest.raises(JobNotFound):
            await queue.cancel(job_id)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_expired_results_are_dropped_without_being_read() -> None:
    """A long-lived memory store must not keep every result (and dead letter) forever."""
    backend = MemoryBackend(f"sweep-{uuid.uuid4().hex[:8]}")
    backend.sweep_interval = 0.0
    queue = TaskQueue(backend)
    ids = await queue.options(result_ttl=0.2).enqueue_many(tasks.fail, [("x",)] * 20)
    await Worker(backend, burst=True, handle_signals=False).start()
    assert len(backend._s.results) == 20
    await asyncio.sleep(0.3)
    await queue.enqueue(tasks.noop)  # the next finished job sweeps
    await Worker(backend, burst=True, handle_signals=False).start()
    assert backend._s.results.keys().isdisjoint(ids) and not backend._s.dead


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_waiting_for_unknown_results_leaves_nothing_behind() -> None:
    backend = MemoryBackend(f"waiters-{uuid.uuid4().hex[:8]}")
    for n in range(50):
        assert await backend.wait_result(f"no-such-job-{n}", 0.01) is None
    assert backend._s.result_waiters == {}
