"""Worker: the fetch loop, concurrency, leases, heartbeats, timeouts, retries and shutdown.

``Worker`` itself is the default ``async`` kind: coroutine functions run on the event
loop, plain functions in a thread (with a copy of the context). Other kinds subclass it
and override only :meth:`Worker._execute`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import importlib
import inspect
import itertools
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from ._codec import decode_call, decode_result, encode_result_meta
from .backend import Backend, Finish
from .chain import ChainFailed, next_step, unpack_continuation
from .config import Settings, load_settings
from .context import ContextPropagator, ContextWrapper
from .errors import (
    BackendError,
    Cancelled,
    ConfigurationError,
    SerializationError,
    SitqError,
    TaskTimeout,
    WorkerLost,
)
from .job import Job
from .plugins import Registry, get_registry
from .result import ErrorInfo, result_meta
from .serializers import Serializer, Signer, check_accept

__all__ = ["JobCall", "Worker", "create_worker"]

log = logging.getLogger("sitq.worker")

_counter = itertools.count(1)


@dataclass(slots=True)
class JobCall:
    """What :meth:`Worker._execute` runs: the job and its decoded call."""

    job: Job
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(slots=True)
class _Active:
    job: Job
    task: asyncio.Task[None] | None = None
    executing: bool = False
    cancel_reason: str | None = None
    value: Any = None
    holds_slot: bool = True


@dataclass(slots=True)
class _Counters:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lost: int = 0
    by_task: dict[str, int] = field(default_factory=dict)


class _Finisher:
    """Batches finished attempts: whatever finished while the last write was in flight
    goes to the backend in the next single ``finish_many`` call.

    ``recorded(entry, outcome)`` is called once per submitted attempt, after its write:
    ``True`` (recorded), ``False`` (refused: the lease was taken over) or the exception
    that made the finisher give up while closing. Jobs do not wait for their write, so
    one job costs one task step instead of two.
    """

    def __init__(
        self, backend: Backend, recorded: Callable[[_Active, bool | BaseException], None]
    ) -> None:
        self.backend = backend
        self.recorded = recorded
        self.pending: list[tuple[Finish, _Active]] = []
        self.event = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task: asyncio.Task[None] | None = None
        self.closing = False

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name="sitq-finisher")

    def submit(self, item: Finish, entry: _Active) -> None:
        self.pending.append((item, entry))
        self.idle.clear()
        self.event.set()

    async def _loop(self) -> None:
        delay = 0.05
        while True:
            await self.event.wait()
            await asyncio.sleep(0)  # let jobs finishing in this loop turn join the batch
            self.event.clear()
            while self.pending:
                batch = self.pending[:500]
                try:
                    oks = await self.backend.finish_many([item for item, _ in batch])
                except Exception as exc:
                    log.warning("could not record %d finished job(s), retrying in %.2fs: %s",
                                len(batch), delay, exc)
                    if self.closing and delay > 2:
                        del self.pending[: len(batch)]
                        for _, entry in batch:
                            self.recorded(entry, exc)
                        continue
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.05
                del self.pending[: len(batch)]
                for (_, entry), ok in zip(batch, oks, strict=True):
                    self.recorded(entry, ok)
            self.idle.set()

    async def close(self) -> None:
        self.closing = True
        self.event.set()
        if self.task is not None and not self.task.done():
            await self.idle.wait()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class Worker:
    """Runs jobs from ``queues`` of ``backend`` with at most ``concurrency`` at a time.

    ``await worker.start()`` runs until :meth:`stop` or SIGINT/SIGTERM (the first signal
    drains gracefully, a second one stops at once); ``async with Worker(...)`` runs it in
    the background. ``burst=True`` stops once nothing is due and nothing runs.
    """

    kind: ClassVar[str] = "async"

    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        queues: Sequence[str] | str | None = None,
        concurrency: int | None = None,
        lease: float | None = None,
        max_lease_expiries: int | None = None,
        accept: Sequence[str] | None = None,
        secret_key: str | list[str] | None = None,
        context: ContextWrapper | list[ContextPropagator | str] | None = None,
        app: str | None = None,
        name: str | None = None,
        burst: bool = False,
        scheduler: bool = False,
        shutdown_grace: float = 30.0,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 300.0,
        handle_signals: bool = True,
        registry: Registry | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.registry = registry or get_registry()
        self.settings = settings or load_settings(
            {
                "backend": backend if isinstance(backend, str) else None,
                "queues": [queues] if isinstance(queues, str) else queues,
                "concurrency": concurrency,
                "lease": lease,
                "max_lease_expiries": max_lease_expiries,
                "secret_key": secret_key,
                "app": app,
            }
        )
        s = self.settings
        self.backend, self._owns_backend = self.registry.resolve_backend(
            backend, s.backend, s.result_ttl
        )
        self.queues = list(s.queues)
        self.concurrency = s.concurrency
        self.lease = s.lease
        self.max_lease_expiries = s.max_lease_expiries
        self.accept = list(accept) if accept is not None else None
        self.signer = Signer(s.secret_key)
        self.context = ContextWrapper.coerce(
            context if context is not None else s.context or None, self.registry
        )
        self.app = s.app
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{next(_counter)}"
        self.burst = burst
        self.scheduler = scheduler
        self.scheduler_runner: Any = None
        self.shutdown_grace = shutdown_grace
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.handle_signals = handle_signals
        self.counters = _Counters()
        # Keyed by (id, attempt): a quick retry of a job can be claimed again by this
        # worker while the previous attempt is still being recorded.
        self._active: dict[tuple[str, int], _Active] = {}
        self._busy = 0  # jobs holding a concurrency slot (claimed, not yet run to the end)
        self._stopping = False
        self._grace: float | None = None
        self._stop_event: asyncio.Event | None = None
        self._slot_event: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self._wait_failing = False
        self._finisher: _Finisher | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._main: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._is_coro: dict[Callable[..., Any], bool] = {}
        self._serializers: dict[str, Serializer] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.backend!r} queues={self.queues}>"

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Run until stopped. Imports ``app`` first so its tasks can be resolved."""
        if self.app:
            import_app(self.app)
        self._stop_event = asyncio.Event()
        self._slot_event = asyncio.Event()
        self._hurry = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Connect before taking over the signals: if the store is unreachable, start()
        # raises and leaves the process's signal handling as it found it.
        await self.backend.connect()
        installed = self._install_signals(loop)
        self._finisher = _Finisher(self.backend, self._recorded)
        self._finisher.start()
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="sitq-heartbeat")
        side_tasks = [heartbeat]
        if self.scheduler:
            side_tasks.append(asyncio.create_task(self._run_scheduler(), name="sitq-scheduler"))
        try:
            log.info("worker %s (%s) consuming %s from %r, concurrency %d",
                     self.id, self.kind, ",".join(self.queues), self.backend, self.concurrency)
            self._started.set()
            await self._fetch_loop()
            await self._drain()
        finally:
            if self._active:
                # start() itself was cancelled (or failed): release the running jobs now
                # instead of leaving their tasks behind without heartbeats or a finisher.
                self._stopping = True
                self._grace = 0.0
                try:
                    async with asyncio.timeout(10):
                        await self._drain()
                except TimeoutError:
                    log.warning("could not release %d job(s) while stopping; their leases "
                                "will expire", len(self._active))
            for task in side_tasks:
                task.cancel()
            await asyncio.gather(*side_tasks, return_exceptions=True)
            await self._finisher.close()
            for sig in installed:
                loop.remove_signal_handler(sig)
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            if self._owns_backend:
                await self.backend.aclose()
            log.info("worker %s stopped", self.id)

    async def _run_scheduler(self) -> None:
        from .queue import TaskQueue
        from .scheduling import Scheduler

        assert self._stop_event is not None
        queue = TaskQueue(self.backend, settings=self.settings, registry=self.registry,
                          context=self.context)
        self.scheduler_runner = Scheduler(queue)
        await self.scheduler_runner.run(self._stop_event)

    async def stop(self, grace: float | None = None) -> None:
        """Stop fetching; let running jobs finish within ``grace`` seconds (default
        ``shutdown_grace``), then release the rest back to the queue."""
        self._stopping = True
        if grace is not None:
            self._grace = grace if self._grace is None else min(grace, self._grace)
            if self._hurry is not None:
                self._hurry.set()
        if self._stop_event is not None:
            self._stop_event.set()
        if self._slot_event is not None:
            self._slot_event.set()
        if self._main is not None and asyncio.current_task() is not self._main:
            await asyncio.gather(self._main, return_exceptions=True)

    async def __aenter__(self) -> Self:
        self._main = asyncio.create_task(self.start(), name=f"sitq-worker-{self.id}")
        while not self._started.is_set():
            if self._main.done():
                await self._main
            await asyncio.sleep(0.001)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return []
        installed: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        return installed

    def _on_signal(self, sig: int) -> None:
        if self._stopping:
            log.warning("second %s: stopping now, releasing running jobs",
                        signal.Signals(sig).name)
            self._grace = 0.0
            if self._hurry is not None:
                self._hurry.set()
        else:
            log.info("%s: finishing running jobs (up to %.0fs), then stopping",
                     signal.Signals(sig).name, self.shutdown_grace)
        self._stopping = True
        assert self._stop_event is not None and self._slot_event is not None
        self._stop_event.set()
        self._slot_event.set()

    # ------------------------------------------------------------------ fetch loop
    async def _fetch_loop(self) -> None:
        assert self._slot_event is not None
        failures = 0
        while not self._stopping:
            free = self.concurrency - self._busy
            if free <= 0:
                self._slot_event.clear()
                await self._slot_event.wait()
                continue
            try:
                jobs = await self.backend.claim(
                    self.queues, limit=free, lease=self.lease, worker=self.id
                )
                failures = 0
            except Exception as exc:
                failures += 1
                delay = min(0.1 * 2**failures, 5.0) * (0.5 + random.random() / 2)
                log.warning("claim from %r failed (%s); retrying in %.2fs",
                            self.backend, exc, delay)
                await self._sleep(delay)
                continue
            if not jobs:
                if self.burst and not self._active:
                    break
                await self._wait_for_work()
                continue
            for job in jobs:
                self._spawn(job)
            if len(jobs) < free and self.backend.supports_notifications and not self.burst:
                # The queues ran dry: wait to be told about new jobs instead of asking
                # again at once (that empty claim would delay the finish of these jobs).
                await self._wait_for_work()

    async def _sleep(self, delay: float) -> None:
        assert self._stop_event is not None
        try:
            await asyncio.wait_for(self._stop_event.wait(), delay)
        except TimeoutError:
            pass

    async def _wait_for_work(self) -> None:
        assert self._stop_event is not None and self._slot_event is not None
        self._slot_event.clear()
        waits = [asyncio.ensure_future(self.backend.wait_for_jobs(self.queues, 1.0)),
                 asyncio.ensure_future(self._stop_event.wait())]
        if self.burst:
            waits.append(asyncio.ensure_future(self._slot_event.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            outcomes = await asyncio.gather(*waits, return_exceptions=True)
        error = outcomes[0]
        if isinstance(error, Exception):
            # The store's wake-up channel failed: poll instead of spinning on claim().
            if not self._wait_failing:
                log.warning("waiting for jobs on %r failed (%s); polling every second "
                            "until it recovers", self.backend, error)
            self._wait_failing = True
            await self._sleep(1.0)
        else:
            self._wait_failing = False

    def _spawn(self, job: Job) -> None:
        self.counters.claimed += 1
        entry = _Active(job)
        self._active[(job.id, job.attempt)] = entry
        self._busy += 1
        entry.task = asyncio.create_task(self._process(entry))

    async def _drain(self) -> None:
        if not self._active:
            return
        loop = asyncio.get_running_loop()
        began = loop.time()
        grace = self.shutdown_grace if self._grace is None else self._grace
        log.info("waiting up to %.1fs for %d running job(s)", grace, len(self._active))
        while True:
            running = [a.task for a in self._active.values()
                       if a.task is not None and not a.task.done()]
            # A second signal or stop(grace=...) may shorten the grace while we wait.
            grace = self.shutdown_grace if self._grace is None else self._grace
            remaining = began + grace - loop.time()
            if not running or remaining <= 0:
                break
            assert self._hurry is not None
            self._hurry.clear()
            hurry = asyncio.ensure_future(self._hurry.wait())
            try:
                await asyncio.wait([*running, hurry], timeout=remaining,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                hurry.cancel()
        left = [a for a in self._active.values() if a.task is not None and not a.task.done()]
        if left and self._finisher is not None:
            # The grace is over: stop retrying writes to a store that keeps failing, or a
            # dead store would hold the worker forever. Unrecorded jobs keep their lease,
            # which expires, so they run again: nothing is lost.
            self._finisher.closing = True
            self._finisher.event.set()
        for entry in left:
            if entry.executing:
                entry.cancel_reason = "shutdown"
                assert entry.task is not None
                entry.task.cancel()
        if left:
            log.info("releasing %d unfinished job(s) back to the queue", len(left))
            await asyncio.wait([a.task for a in left if a.task is not None])

    # ------------------------------------------------------------------ heartbeat
    async def _heartbeat_loop(self) -> None:
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)
            entries = list(self._active.values())
            if not entries:
                continue
            try:
                states = await self.backend.extend([e.job for e in entries], self.lease)
            except Exception as exc:
                log.warning("heartbeat for %d job(s) failed: %s", len(entries), exc)
                continue
            for entry, state in zip(entries, states, strict=True):
                if state == "ok" or entry.task is None or not entry.executing:
                    continue
                if state == "lost":
                    log.warning("lease of job %s was lost (taken over); abandoning it",
                                entry.job.id)
                entry.cancel_reason = state
                entry.task.cancel()

    # ------------------------------------------------------------------ one job
    async def _process(self, entry: _Active) -> None:
        job = entry.job
        started = time.time()
        item: Finish | None
        submitted = False
        try:
            item = await self._attempt(entry, started)
            if item is not None and job.chain and item.outcome in ("success", "failed"):
                await self._continue_chain(entry, item)
            if item is not None:
                assert self._finisher is not None
                if len(self._finisher.pending) < self.concurrency:
                    # The job has run: its slot takes the next job while the result is
                    # recorded (the entry stays in _active, so its lease is still renewed).
                    self._release_slot(entry)
                self._finisher.submit(item, entry)  # _recorded() ends the entry
                submitted = True
        except BackendError as exc:
            log.error("job %s: could not record its outcome (%s); its lease will expire and "
                      "it will run again", job.id, exc)
        except Exception:
            log.exception("job %s: internal error while finishing it", job.id)
        finally:
            if not submitted:
                self._forget(entry)

    def _recorded(self, entry: _Active, outcome: bool | BaseException) -> None:
        """The finisher wrote (or gave up on) this attempt's outcome."""
        if outcome is not True:
            job = entry.job
            if outcome is False:
                self.counters.lost += 1
                log.warning("job %s: result not recorded, its lease was taken over", job.id)
            else:
                log.error("job %s: could not record its outcome (%s); its lease will expire "
                          "and it will run again", job.id, outcome)
        self._forget(entry)

    def _forget(self, entry: _Active) -> None:
        self._active.pop((entry.job.id, entry.job.attempt), None)
        self._release_slot(entry)

    def _release_slot(self, entry: _Active) -> None:
        if entry.holds_slot:
            entry.holds_slot = False
            self._busy -= 1
            if self._slot_event is not None:
                self._slot_event.set()

    async def _attempt(self, entry: _Active, started: float) -> Finish | None:
        job = entry.job
        if job.lease_expiries >= self.max_lease_expiries:
            lost = WorkerLost(
                f"the lease of this job expired {job.lease_expiries} times (max_lease_expiries="
                f"{self.max_lease_expiries}): the workers running it died or hung. Look for "
                "crashes, OOM kills or blocking code, or raise the lease"
            )
            return self._failed(job, lost, None, started)
        if job.cancel_requested:
            # Cancelled while a previous attempt ran, and that worker died: do not run it.
            return self._failed(job, Cancelled("the job was cancelled while running"), None,
                                started)
        try:
            call = self._prepare(job)
        except SitqError as exc:
            log.error("job %s (%s) cannot run: %s", job.id, job.task, exc)
            return self._failed(job, exc, None, started)
        except Exception as exc:  # a bug in a serializer plugin: still fail the job now
            log.exception("job %s (%s) cannot run", job.id, job.task)
            return self._failed(job, exc, traceback.format_exc(), started)
        entry.executing = True
        timeout_cm = asyncio.timeout(job.timeout) if job.timeout else None
        try:
            with self.context.restore(job.headers):
                if timeout_cm is not None:
                    async with timeout_cm:
                        value = await self._execute(call)
                else:
                    value = await self._execute(call)
        except asyncio.CancelledError as exc:
            entry.executing = False
            reason = entry.cancel_reason
            if reason == "cancel":
                return self._failed(job, Cancelled("the job was cancelled while running"),
                                    None, started)
            if reason == "lost":
                self.counters.lost += 1
                return None
            if reason == "shutdown":
                self.counters.released += 1
                return Finish(job, "release")
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # cancelled from outside (the loop is shutting down)
            # The task raised CancelledError itself (e.g. a future it awaited was
            # cancelled): an ordinary failure, with its traceback.
            return self._on_error(job, exc, traceback.format_exc(), started)
        except (Exception, SystemExit) as exc:
            # SystemExit too: a task calling sys.exit() (argparse, click, scripts) fails
            # its job; it must not stop the worker and every job it runs.
            entry.executing = False
            error: BaseException = exc
            tb: str | None = getattr(exc, "__sitq_traceback__", None) or traceback.format_exc()
            if timeout_cm is not None and timeout_cm.expired():
                error = TaskTimeout(f"the job ran longer than its timeout of {job.timeout}s")
                tb = None
            return self._on_error(job, error, tb, started)
        entry.executing = False
        try:
            result = self._result(job, "success", value, None, None, started)
        except Exception as exc:
            err = SerializationError(
                f"the return value of {job.task} ({type(value).__name__}) could not be "
                f"serialized with {job.serializer!r}: {exc}. Return plain data or choose "
                "another serializer"
            )
            return self._failed(job, err, None, started)
        self.counters.succeeded += 1
        if job.chain:
            entry.value = value
        return Finish(job, "success", result)

    def _prepare(self, job: Job) -> JobCall:
        if self.accept is not None:
            check_accept(job.serializer, self.accept)
        serializer = self._serializers.get(job.serializer) or self._serializer(job.serializer)
        func, args, kwargs = decode_call(job.payload, serializer, self.signer, job.task)
        if job.chain:
            _, previous, failed = unpack_continuation(job.chain)
            if failed is not None:
                raise ChainFailed(f"step {failed[0]} of this chain failed: {failed[1]}")
            if previous is not None:
                value = serializer.loads(self.signer.verify(previous, "chain value"))
                args = (value, *args)
        return JobCall(job, func, args, kwargs)

    async def _continue_chain(self, entry: _Active, item: Finish) -> None:
        """Enqueue the chain's next step before this one is recorded as finished (a crash
        in between runs this step again rather than losing the rest of the chain)."""
        job = entry.job
        if item.outcome == "success":
            serializer = self._serializer(job.serializer)
            nxt = next_step(job, self.signer.sign(serializer.dumps(entry.value)), None)
        else:
            assert item.result is not None
            assert job.chain is not None
            _, _, upstream = unpack_continuation(job.chain)
            error = decode_result(item.result, self.registry.serializer, self.signer).error
            nxt = next_step(job, None, upstream or (job.id, str(error)))
        if nxt is not None:
            await self.backend.enqueue(nxt)

    def _serializer(self, name: str) -> Serializer:
        try:
            serializer = self.registry.serializer(name)
        except SitqError as exc:
            raise SerializationError(f"job uses serializer {name!r}: {exc}") from exc
        self._serializers[name] = serializer
        return serializer

    def _on_error(
        self, job: Job, exc: BaseException, tb: str | None, started: float
    ) -> Finish:
        job.failures += 1
        if job.failures <= job.max_retries:
            delay = random.uniform(
                0, min(self.retry_backoff_max, self.retry_backoff * 2 ** (job.failures - 1))
            )
            self.counters.retried += 1
            log.warning("job %s (%s) raised %s; retry %d/%d in %.2fs", job.id, job.task,
                        ErrorInfo.from_exception(exc), job.failures, job.max_retries, delay)
            return Finish(job, "retry", None, delay)
        log.error("job %s (%s) failed: %s", job.id, job.task, ErrorInfo.from_exception(exc))
        return self._failed(job, exc, tb, started)

    def _failed(self, job: Job, exc: BaseException, tb: str | None, started: float) -> Finish:
        self.counters.failed += 1
        data = self._result(job, "failed", None, ErrorInfo.from_exception(exc), tb, started)
        return Finish(job, "failed", data)

    def _result(
        self,
        job: Job,
        status: str,
        value: Any,
        error: ErrorInfo | None,
        tb: str | None,
        started: float,
    ) -> bytes:
        meta = result_meta(
            job.id, status, error, tb, job.attempt, job.task, job.queue,
            job.created_at.timestamp(), started, time.time(), self.id,
        )
        serializer = self._serializers.get(job.serializer)
        if serializer is None:
            try:
                serializer = self._serializer(job.serializer)
            except SitqError:
                serializer = self.registry.serializer("msgpack")
        return encode_result_meta(meta, value, serializer, self.signer)

    # ------------------------------------------------------------------ execution
    async def _execute(self, call: JobCall) -> Any:
        """Run one call and return its value. Kinds override this.

        Coroutine functions are awaited on the loop; plain functions run in a thread of
        this worker's pool with a copy of the current context (a thread cannot be killed:
        on timeout its result is discarded).
        """
        func = call.func
        is_coro = self._is_coro.get(func)
        if is_coro is None:
            is_coro = inspect.iscoroutinefunction(func)
            try:
                self._is_coro[func] = is_coro
            except TypeError:
                pass
        if is_coro:
            return await func(*call.args, **call.kwargs)
        executor = self._executor
        if executor is None:
            executor = self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="sitq-job"
            )
        ctx = contextvars.copy_context()
        future = executor.submit(ctx.run, func, *call.args, **call.kwargs)
        try:
            value = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancel() and not future.done():
                # The thread cannot be stopped: leave it its pool and give later jobs a
                # fresh one, so an abandoned thread never starves them.
                if self._executor is executor:
                    self._executor = None
                executor.shutdown(wait=False)
            raise
        if inspect.isawaitable(value):
            value = await value
        return value


def import_app(app: str) -> None:
    """Import the user's app module (tasks, schedules); the cwd is put on ``sys.path``."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(app)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import app module {app!r}: {exc}. Pass an importable module path "
            "(e.g. --app myproject.tasks) and run from the project directory"
        ) from exc


def create_worker(
    kind: str, backend: str | Backend | None = None, *, registry: Registry | None = None,
    **options: Any,
) -> Worker:
    """Build a worker of kind ``kind`` (``"async"``, ``"thread"``, ``"process"``, ...)."""
    registry = registry or get_registry()
    cls = registry.worker_class(kind)
    return cls(backend, registry=registry, **options)
