"""Several ``sitq worker`` processes on one SQLite file: every job runs exactly once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sitq import TaskQueue
from sitq.testing import tasks

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

JOBS = 600


def _worker(url: str, queue: str, tmp_path: Path, n: int, *extra: str) -> subprocess.Popen[str]:
    err = (tmp_path / f"worker-{n}.err").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "sitq", "worker", "--backend", url, "--queue", queue,
         "--concurrency", "8", *extra],
        stdout=subprocess.DEVNULL, stderr=err, text=True,
    )


def _check_run(log: Path, tmp_path: Path, ids: list[str], results: list[object]) -> None:
    workers = Counter(r.worker for r in results)  # type: ignore[attr-defined]
    print("jobs per worker:", dict(workers))
    runs = Counter(log.read_text().split())
    assert len(runs) == JOBS, f"{JOBS - len(runs)} job(s) never ran"
    twice = {token: n for token, n in runs.items() if n > 1}
    assert not twice, f"jobs ran more than once: {twice}"
    assert all(r is not None and r.status == "success" and r.attempts == 1  # type: ignore[attr-defined]
               for r in results)
    stderr = "\n".join(p.read_text() for p in sorted(tmp_path.glob("worker-*.err")))
    for bad in ("locked", "SQLITE_BUSY", "is busy", "Traceback", " ERROR ", " WARNING "):
        assert bad not in stderr, f"{bad!r} in worker stderr:\n{stderr[-3000:]}"


@pytest.mark.timeout(90)
async def test_burst_workers_share_a_prefilled_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    log = tmp_path / "executions.log"
    async with TaskQueue(url) as queue:
        ids = await queue.options(queue="burst").enqueue_many(
            tasks.record, [(str(log), f"job-{i}") for i in range(JOBS)]
        )
        procs = [_worker(url, "burst", tmp_path, n, "--burst") for n in range(3)]
        try:
            codes = [await asyncio.to_thread(p.wait, 60) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        assert codes == [0, 0, 0]
        results = [await queue.get_result(i) for i in ids]
    _check_run(log, tmp_path, ids, results)


@pytest.mark.timeout(90)
async def test_workers_and_a_producer_write_at_once(tmp_path: Path) -> None:
    """Workers claim and finish while the producer keeps enqueueing (single and bulk)."""
    url = f"sqlite:///{tmp_path / 'live.db'}?busy_timeout=2000"
    log = tmp_path / "executions.log"
    procs = [_worker(url, "live", tmp_path, n) for n in range(3)]
    try:
        async with TaskQueue(url) as queue:
            q = queue.options(queue="live")
            ids: list[str] = []
            for start in range(0, JOBS, 100):
                ids += [await q.enqueue(tasks.record, str(log), f"job-{i}")
                        for i in range(start, start + 50)]
                ids += await q.enqueue_many(
                    tasks.record, [(str(log), f"job-{i}") for i in range(start + 50, start + 100)]
                )
                await asyncio.sleep(0.05)
            results = [await queue.get_result(i, timeout=60) for i in ids]
    finally:
        for p in procs:
            p.terminate()
        codes = [await asyncio.to_thread(p.wait, 30) for p in procs]
    assert codes == [0, 0, 0]
    _check_run(log, tmp_path, ids, results)
    assert len({r.worker for r in results}) >= 2, "expected several workers to get jobs"
    stats_seen = [p.read_text() for p in tmp_path.glob("worker-*.err")]
    assert all("stopped" in text for text in stats_seen)
