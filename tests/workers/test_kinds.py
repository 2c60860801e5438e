"""The thread and process worker kinds (sitq-workers), run against the memory backend."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from sitq import TaskQueue, create_worker
from sitq.plugins import get_registry
from sitq.testing import tasks
from sitq_workers import ProcessWorker, ThreadWorker

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.fixture
def url() -> str:
    return f"memory://kinds-{uuid.uuid4().hex[:8]}"


def test_kinds_are_registered_by_name() -> None:
    registry = get_registry()
    assert registry.worker_class("thread") is ThreadWorker
    assert registry.worker_class("process") is ProcessWorker
    assert isinstance(create_worker("process", "memory://x", handle_signals=False),
                      ProcessWorker)


@pytest.mark.parametrize("kind", ["thread", "process"])
async def test_runs_sync_and_async_jobs(kind: str, url: str) -> None:
    async with TaskQueue(url) as queue:
        ids = [await queue.enqueue(tasks.add, 1, 2), await queue.enqueue(tasks.multiply, 3, 4),
               await queue.enqueue(tasks.fail, "relayed")]
        async with create_worker(kind, url, handle_signals=False, concurrency=2):
            results = [await queue.get_result(i, timeout=30) for i in ids]
    assert [r.status for r in results if r] == ["success", "success", "failed"]
    assert results[0] and results[0].value == 3
    assert results[1] and results[1].value == 12
    failed = results[2]
    assert failed is not None and str(failed.error) == "ValueError: relayed"
    assert failed.error is not None and failed.error.module == "builtins"
    assert "raise ValueError(message)" in (failed.traceback or "")


async def test_process_kind_runs_jobs_in_child_processes(url: str) -> None:
    async with TaskQueue(url) as queue:
        job = await queue.enqueue(tasks.getpid)
        async with create_worker("process", url, handle_signals=False):
            result = await queue.get_result(job, timeout=30)
    assert result is not None and result.value != os.getpid()


async def test_process_kind_kills_a_job_that_overruns_its_timeout(url: str) -> None:
    async with TaskQueue(url) as queue:
        slow = await queue.options(timeout=1.0).enqueue(tasks.sleep_sync, 60)
        pid_job = await queue.enqueue(tasks.getpid)
        worker = create_worker("process", url, handle_signals=False, concurrency=1)
        async with worker:
            started = time.monotonic()
            result = await queue.get_result(slow, timeout=30)
            assert time.monotonic() - started < 20
            after = await queue.get_result(pid_job, timeout=30)
    assert result is not None and result.error is not None
    assert result.error.type == "TaskTimeout"
    # The overrunning child was killed: only the replacement ran the next job.
    assert after is not None and after.status == "success"
    assert _job_processes() == [], "the worker left job processes behind"


def _job_processes() -> list[psutil.Process]:
    """Children of this test process started by multiprocessing's spawn (job processes)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmd and child.is_running() and child.status() != "zombie":
            found.append(child)
    return found


async def test_process_kind_survives_a_job_that_crashes_its_process(url: str) -> None:
    async with TaskQueue(url) as queue:
        crash = await queue.enqueue(tasks.crash, 7)
        after = await queue.enqueue(tasks.add, 20, 22)
        async with create_worker("process", url, handle_signals=False, concurrency=1):
            crashed = await queue.get_result(crash, timeout=30)
            good = await queue.get_result(after, timeout=30)
    assert crashed is not None and crashed.error is not None
    assert crashed.error.type == "ProcessCrashed"
    assert "exited with code 7" in crashed.error.message
    assert good is not None and good.value == 42
    assert _job_processes() == []


async def test_thread_kind_timeout_discards_the_result(url: str) -> None:
    async with TaskQueue(url) as queue:
        slow = await queue.options(timeout=0.3).enqueue(tasks.sleep, 3)
        async with create_worker("thread", url, handle_signals=False):
            result = await queue.get_result(slow, timeout=30)
    assert result is not None and result.error is not None
    assert result.error.type == "TaskTimeout"


async def test_thread_kind_a_timed_out_thread_does_not_starve_later_jobs(url: str) -> None:
    """The thread of a timed-out job runs on (it cannot be killed); later jobs must still
    get a thread instead of queueing behind it and timing out without ever running."""
    async with TaskQueue(url) as queue:
        hung = await queue.options(timeout=0.2).enqueue(tasks.sleep_sync, 2)
        async with create_worker("thread", url, handle_signals=False, concurrency=1,
                                 shutdown_grace=1):
            first = await queue.get_result(hung, timeout=10)
            after = await queue.options(timeout=1).enqueue(tasks.multiply, 6, 7)
            result = await queue.get_result(after, timeout=10)
    assert first is not None and first.error is not None
    assert first.error.type == "TaskTimeout"
    assert result is not None and result.value == 42, result


@pytest.mark.timeout(60)
async def test_process_kind_children_die_with_a_killed_worker(tmp_path: Path) -> None:
    """SIGKILL of the worker (OOM killer, kill -9) must not leave its job's process running
    on: the job runs again elsewhere once its lease expires, so an orphan would run it twice
    at once (or forever)."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with TaskQueue(url) as queue:
        await queue.enqueue(tasks.marker_then_sleep, str(tmp_path), "job", 20)
    code = (f"import asyncio\nfrom sitq import create_worker\n"
            f"asyncio.run(create_worker('process', {url!r}, concurrency=1).start())\n")
    worker = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (started := list(tmp_path.glob("started-job-*"))):
            assert time.monotonic() < deadline, "the job never started"
            await asyncio.sleep(0.1)
        child = psutil.Process(int(started[0].name.rsplit("-", 1)[1]))
    finally:
        worker.kill()
        worker.wait(10)
    try:
        child.wait(5)
    except psutil.TimeoutExpired:
        child.kill()
        pytest.fail("the job's process outlived its SIGKILLed worker")


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str() for you")


def _raise_unprintable() -> None:
    raise _UnprintableError()


async def test_process_kind_relays_an_exception_whose_str_fails(url: str) -> None:
    async with TaskQueue(url) as queue:
        job = await queue.enqueue(_raise_unprintable)
        async with create_worker("process", url, handle_signals=False, concurrency=1):
            result = await queue.get_result(job, timeout=30)
    assert result is not None and result.error is not None
    assert result.error.type == "_UnprintableError", result.error
    assert "str() failed" in result.error.message
    assert "_raise_unprintable" in (result.traceback or "")
