"""Conformance tests of a backend's life around the jobs: the contract's shape, idempotency
key scope, purge, close, capability refusals and graceful shutdown of a worker.

Part of :class:`~sitq.testing.BackendConformance` (mixed in); the fixtures are its own.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from ..backend import Backend
from ..errors import BackendError, NotSupported
from ..job import utcnow
from ..plugins import get_registry
from ..queue import TaskQueue
from ..worker import Worker
from . import tasks
from ._jobs import claim_all, make_job

#: Public Backend methods a backend must not override (it implements storage steps).
_TEMPLATES = sorted(
    name for name, member in vars(Backend).items()
    if not name.startswith("_") and callable(member) and name != "from_url"
)
#: Capability flag -> the storage steps a backend declaring it implements.
_STEPS_OF = {
    "supports_dead_letters": ("_dead_letters", "_requeue"),
    "supports_transactions": ("_enqueue_in_transaction",),
    "supports_notifications": ("_wait_result", "_wait_for_jobs"),
}
#: Bounds (seconds) of the shutdown tests: generous, a hang fails instead of waiting.
_START_LIMIT = 30.0
_EXIT_LIMIT = 20.0


async def _until(predicate: Callable[[], Any], what: str, limit: float = _START_LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


class _Signalled(Protocol):
    """A running worker that is stopped by signals, as an operator stops one."""

    def signal(self) -> None: ...

    async def exited(self, limit: float) -> bool: ...


class _WorkerProcess:
    """``sitq worker`` in a subprocess (backends with ``supports_multiprocess``)."""

    def __init__(self, url: str, queue: str) -> None:
        # A file, not a pipe (a full pipe would block the worker); closed by close().
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sitq", "worker", "--backend", url, "--queue", queue],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )

    def signal(self) -> None:
        assert self.proc.poll() is None, "the worker exited before it was signalled"
        self.proc.send_signal(signal.SIGTERM)

    async def exited(self, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        if self.proc.returncode != 0:
            self.log.seek(0)
            raise AssertionError(f"sitq worker exited with {self.proc.returncode}: "
                                 f"{self.log.read().decode(errors='replace')[-4000:]}")
        return True

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


class _WorkerInProcess:
    """A ``Worker`` on this process's loop, handling SIGTERM itself (in-process stores).

    ``signal()`` sends a real SIGTERM to this process, only while the worker's handler is
    installed (otherwise it would end the test run)."""

    def __init__(self, backend: Backend, queue: str) -> None:
        self.worker = Worker(backend, queues=[queue], handle_signals=True)
        self.task = asyncio.ensure_future(self.worker.start())

    def signal(self) -> None:
        assert not self.task.done(), "the worker exited before it was signalled"
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None), (
            "the worker did not install its SIGTERM handler (is the test on the main thread?)"
        )
        os.kill(os.getpid(), signal.SIGTERM)

    async def exited(self, limit: float) -> bool:
        done, _ = await asyncio.wait([self.task], timeout=limit)
        if done:
            self.task.result()
        return bool(done)

    async def close(self) -> None:
        if not self.task.done():
            await self.worker.stop(grace=0)
        await asyncio.gather(self.task, return_exceptions=True)


class LifecycleTests:
    """Mixed into BackendConformance."""

    # ================================================================== the contract
    async def test_backend_implements_steps_not_public_methods(self, backend: Backend) -> None:
        """A backend implements storage steps; the public methods are the base's templates
        (docs/backends/writing.md). Each declared capability has its steps."""
        cls = type(backend)
        overridden = [
            f"{klass.__name__}.{name}"
            for klass in cls.__mro__
            if klass not in (Backend, object)
            for name in _TEMPLATES
            if name in vars(klass)
        ]
        assert not overridden, (
            f"{', '.join(overridden)} override public Backend methods; implement the storage "
            "step instead (e.g. _enqueue_one for enqueue, _wait_result for wait_result, "
            "_wait_for_jobs for wait_for_jobs)"
        )
        for flag, steps in _STEPS_OF.items():
            if not getattr(cls, flag):
                continue
            missing = [s for s in steps if getattr(cls, s) is getattr(Backend, s)]
            if flag == "supports_notifications":  # one of the two wakes something
                missing = missing if len(missing) == len(steps) else []
            assert not missing, f"{cls.__name__} declares {flag} but not {', '.join(missing)}"
        abstract = sorted(getattr(cls, "__abstractmethods__", ()))
        assert not abstract, f"{cls.__name__} leaves {abstract} unimplemented"
        for name in ("_enqueue", "_claim", "_finish", "_cancel", "_claim_tick"):
            assert inspect.iscoroutinefunction(getattr(cls, name)), f"{name} must be async"

    # ================================================================== keys and purge
    async def test_idempotency_key_is_scoped_to_its_queue(
        self, backend: Backend, queue_name: str
    ) -> None:
        other = queue_name + "-b"
        key = f"invoice-{queue_name}"
        a = make_job(queue_name, key=key)
        b = make_job(other, key=key)
        assert await backend.enqueue(a) == a.id
        assert await backend.enqueue(b) == b.id, "the same key in another queue is another job"
        assert await backend.enqueue(make_job(queue_name, key=key)) == a.id
        assert await backend.enqueue(make_job(other, key=key)) == b.id
        c, d = make_job(queue_name, key=key + "-many"), make_job(other, key=key + "-many")
        e = make_job(queue_name, key=key + "-many")
        assert await backend.enqueue_many([c, d, e]) == [c.id, d.id, c.id]
        [claimed] = await backend.claim([other], limit=1, lease=30, worker="w")
        assert claimed.id == b.id
        assert await backend.complete(claimed, b"done")
        # Freeing the key in one queue leaves the other queue's holder alone.
        assert await backend.enqueue(make_job(queue_name, key=key)) == a.id
        fresh = make_job(other, key=key)
        assert await backend.enqueue(fresh) == fresh.id

    async def test_purge_removes_everything_of_those_queues(
        self, backend: Backend, queue_name: str
    ) -> None:
        kept_queue = queue_name + "-b"
        tick = utcnow().replace(microsecond=0)
        schedule = f"sched-{queue_name}"
        key = f"k-{queue_name}"
        # One of everything in the purged queue...
        done, failed, running = (make_job(queue_name, max_retries=0) for _ in range(3))
        await backend.enqueue_many([done, failed, running])
        claimed = {j.id: j for j in await claim_all(backend, queue_name)}
        assert await backend.complete(claimed[done.id], b"done-result")
        assert await backend.fail(claimed[failed.id], b"failed-result")
        queued = make_job(queue_name, key=key)
        later = make_job(queue_name, eta=utcnow() + timedelta(hours=1))
        await backend.enqueue_many([queued, later])
        assert await backend.claim_tick(schedule, tick, queue=queue_name)
        # ...and in a queue that is kept.
        kept_done = make_job(kept_queue)
        await backend.enqueue(kept_done)
        [kd] = await claim_all(backend, kept_queue)
        assert await backend.complete(kd, b"kept-result")
        kept = make_job(kept_queue, key=key)
        await backend.enqueue(kept)
        assert await backend.claim_tick(schedule, tick, queue=kept_queue)

        assert await backend.purge([queue_name]) >= 4
        stats = (await backend.stats([queue_name]))[queue_name]
        assert (stats.queued, stats.scheduled, stats.running, stats.failed) == (0, 0, 0, 0)
        for job in (done, failed, running, queued, later):
            assert await backend.get_job(job.id) is None, f"job {job.id} survived the purge"
            assert await backend.get_result(job.id) is None, f"result of {job.id} survived"
        if backend.supports_dead_letters:
            assert await backend.dead_letters(queue_name) == []
        assert await claim_all(backend, queue_name) == []
        again = make_job(queue_name, key=key)
        assert await backend.enqueue(again) == again.id, "the purged job's key is free"
        assert await backend.claim_tick(schedule, tick, queue=queue_name), (
            "the purged queue's cron tick was left behind"
        )
        # The other queue lost nothing.
        assert (await backend.stats([kept_queue]))[kept_queue].queued == 1
        assert await backend.enqueue(make_job(kept_queue, key=key)) == kept.id
        assert await backend.get_result(kept_done.id) == b"kept-result"
        assert not await backend.claim_tick(schedule, tick, queue=kept_queue)

    # ================================================================== close
    async def test_close_ends_every_task_and_resource(
        self, make_backend: Callable[..., Backend], queue_name: str
    ) -> None:
        """After ``aclose()`` nothing the backend started is pending, and nothing it opened
        is left for the garbage collector (ResourceWarning, an unawaited coroutine)."""
        async with _nothing_left_behind("aclose()"):
            b = make_backend()
            await b.connect()
            job = make_job(queue_name)
            await b.enqueue(job)
            await b.enqueue_many([make_job(queue_name) for _ in range(3)])
            assert await b.wait_result(job.id, 0.05) is None  # waits by notification, if any
            for _ in range(2):  # the first wait may only subscribe
                await b.wait_for_jobs([queue_name], 0.05)
            claimed = await claim_all(b, queue_name)
            waiter = asyncio.ensure_future(b.wait_result(job.id, 10))
            await asyncio.sleep(0.05)
            assert await b.extend(claimed, 30) == ["ok"] * len(claimed)
            for j in claimed:
                assert await b.complete(j, b"r")
            assert await waiter == b"r"
            assert await b.claim_tick(f"sched-{queue_name}", utcnow(), queue=queue_name)
            await b.stats([queue_name])
            await b.aclose()
            del b, waiter

    async def test_failed_connect_leaves_nothing_behind(
        self, unreachable_backend_url: str | None, backend_options: dict[str, Any]
    ) -> None:
        """A connect that fails (the server is down) raises a BackendError and leaves no
        task or open resource behind, with or without a later ``aclose()``."""
        if unreachable_backend_url is None:
            pytest.skip("no unreachable_backend_url fixture: provide one to run this test")
        async with _nothing_left_behind("a failed connect"):
            b = get_registry().backend(unreachable_backend_url, **backend_options)
            with pytest.raises(BackendError):
                await b.connect()
            assert not b.connected
            await b.aclose()
            del b

    # ================================================================== capabilities
    async def test_missing_capabilities_are_refused(
        self, backend: Backend, backend_url: str, queue: TaskQueue, queue_name: str
    ) -> None:
        """What a backend does not declare raises NotSupported saying so, instead of being
        silently dropped."""
        lacking = [flag for flag in ("supports_transactions", "supports_dead_letters",
                                     "supports_multiprocess") if not getattr(backend, flag)]
        if not lacking:
            pytest.skip(f"{type(backend).__name__} declares every refusable capability")
        if not backend.supports_transactions:
            bound = queue.options(queue=queue_name, connection=object())
            with pytest.raises(NotSupported, match="supports_transactions"):
                await bound.enqueue(tasks.noop)
            with pytest.raises(NotSupported, match="supports_transactions"):
                await bound.enqueue_many(tasks.add, [(1, 2)])
            assert (await backend.stats([queue_name]))[queue_name].queued == 0
        if not backend.supports_dead_letters:
            with pytest.raises(NotSupported, match="supports_dead_letters"):
                await backend.dead_letters(queue_name)
            with pytest.raises(NotSupported, match="supports_dead_letters"):
                await backend.requeue("any-id")
        if not backend.supports_multiprocess:
            out = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "sitq", "worker", "--backend", backend_url,
                 "--queue", queue_name, "--burst"],
                capture_output=True, text=True, timeout=60,
            )
            assert out.returncode == 2, out
            assert "supports_multiprocess" in out.stderr, out.stderr
            assert "sitq worker" in out.stderr, out.stderr

    # ================================================================== shutdown
    @pytest.fixture
    def job_in_signalled_worker(
        self, backend: Backend, make_backend: Callable[..., Backend], backend_url: str,
        queue: TaskQueue, queue_name: str, tmp_path: Path,
    ) -> Callable[[float], AbstractAsyncContextManager[tuple[_Signalled, str]]]:
        """``async with job_in_signalled_worker(seconds) as (worker, job_id)``: a job that
        sleeps ``seconds`` (writing ``started-job-*`` / ``done-job-*`` markers in
        ``tmp_path``), running in a worker stopped by SIGTERM: ``sitq worker`` in a
        subprocess where the store is shared between processes, else a ``Worker`` here."""

        @asynccontextmanager
        async def run(seconds: float) -> AsyncIterator[tuple[_Signalled, str]]:
            job_id = await queue.options(queue=queue_name).enqueue(
                tasks.marker_then_sleep, str(tmp_path), "job", seconds
            )

            async def started() -> bool:
                return await _has(tmp_path, "started-job-*")

            if backend.supports_multiprocess:
                proc = _WorkerProcess(backend_url, queue_name)
                try:
                    await _until(started, "the job to start")
                    yield proc, job_id
                finally:
                    await asyncio.to_thread(proc.close)
                return
            own = make_backend()
            runner = _WorkerInProcess(own, queue_name)
            try:
                await _until(started, "the job to start")
                yield runner, job_id
            finally:
                await runner.close()
                await own.aclose()

        return run

    async def test_shutdown_signal_lets_running_jobs_finish(
        self, job_in_signalled_worker: Callable[..., Any], queue: TaskQueue, tmp_path: Path
    ) -> None:
        async with job_in_signalled_worker(1.0) as (worker, job_id):
            worker.signal()
            assert await worker.exited(_EXIT_LIMIT), "the worker did not stop after SIGTERM"
        result = await queue.get_result(job_id)
        assert result is not None and result.status == "success", result
        assert result.attempts == 1
        assert len(list(tmp_path.glob("done-job-*"))) == 1

    async def test_shutdown_second_signal_releases_at_once(
        self, job_in_signalled_worker: Callable[..., Any], backend: Backend, queue: TaskQueue,
        tmp_path: Path,
    ) -> None:
        async with job_in_signalled_worker(120.0) as (worker, job_id):
            worker.signal()  # drains: up to the 30 s default grace
            assert not await worker.exited(0.5), "the first signal must let the job run on"
            assert (await queue.inspect(job_id)).state == "running"
            worker.signal()  # the second one releases the job now
            assert await worker.exited(_EXIT_LIMIT), "a second SIGTERM must stop the worker"
        job = await backend.get_job(job_id)
        assert job is not None and job.state == "queued", "released, not lost"
        assert (job.failures, job.lease_expiries) == (0, 0), "a shutdown is no failure"
        assert await queue.get_result(job_id) is None
        assert not list(tmp_path.glob("done-job-*"))

    async def test_shutdown_grace_expiry_releases_and_the_job_runs_again(
        self, backend: Backend, queue: TaskQueue, queue_name: str, tmp_path: Path
    ) -> None:
        job_id = await queue.options(queue=queue_name).enqueue(
            tasks.slow_once, str(tmp_path), 120.0
        )
        async with Worker(backend, queues=[queue_name], handle_signals=False) as worker:
            await _until(lambda: _has(tmp_path, "started-*"), "the job to start")
            started = time.monotonic()
            await asyncio.wait_for(worker.stop(grace=0.3), _EXIT_LIMIT)
            assert time.monotonic() - started < _EXIT_LIMIT
        job = await backend.get_job(job_id)
        assert job is not None and job.state == "queued", "released after the grace, not lost"
        assert (job.failures, job.lease_expiries) == (0, 0)
        async with Worker(backend, queues=[queue_name], handle_signals=False):
            result = await queue.get_result(job_id, timeout=_START_LIMIT)
        assert result is not None and result.unwrap() == "later run"
        assert result.attempts == 2


@asynccontextmanager
async def _nothing_left_behind(what: str) -> AsyncIterator[None]:
    """The block starts no task that outlives it and leaves nothing for the garbage
    collector to warn about (ResourceWarning, a coroutine never awaited). The block
    deletes its own references to what it opened."""
    before = asyncio.all_tasks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        for _ in range(3):
            await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        assert not left, f"{what} left tasks pending: {[t.get_name() for t in left]}"
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning | RuntimeWarning)]
    assert not leaks, [f"{w.category.__name__}: {w.message}" for w in leaks]


async def _has(directory: Path, pattern: str) -> bool:
    return bool(list(directory.glob(pattern)))
