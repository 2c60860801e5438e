"""The "Known issues" the docs describe are still real.

Each test here reproduces one documented known issue. When the code is fixed, the test
fails and tells you which paragraphs to update, so the docs never describe a bug that is
gone.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from _docs_support import DOCS

from sitq import SerializationError, TaskQueue, Worker
from sitq.testing import tasks

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

DECISIONS = (DOCS / "decisions.md").read_text()
WORKERS = (DOCS / "workers.md").read_text()


async def test_a_second_stop_does_not_cut_the_shutdown_wait_short() -> None:
    assert "second signal that arrives while the worker" in WORKERS
    assert "A second signal does not cut the shutdown wait short" in DECISIONS
    url = f"memory://known-issue-{uuid.uuid4().hex[:8]}"
    grace = 1.0
    async with TaskQueue(url) as queue:
        job_id = await queue.enqueue(tasks.sleep, 30)
        worker = Worker(url, handle_signals=False, shutdown_grace=grace)
        async with worker:
            for _ in range(1000):
                if (await queue.inspect(job_id)).state == "running":
                    break
                await asyncio.sleep(0.01)
            first = asyncio.create_task(worker.stop())  # like a first SIGTERM
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await worker.stop(grace=0)  # like a second SIGTERM: should be immediate
            waited = time.monotonic() - started
            await first
        await queue.purge()
    if waited < grace / 2:
        pytest.fail(
            "fixed: a second stop now cuts the shutdown wait short. Remove the known issue "
            "from docs/workers.md (Signals and shutdown), docs/decisions.md (Known issues, "
            "Graceful shutdown) and docs/concepts.md (Graceful shutdown), and this test"
        )
