"""Running one claimed attempt, from its checks to the :class:`~sitq.backend.Finish` that
records it.

:class:`Attempts` refuses what must not run (a lease that expired too often, a job
cancelled while its last worker died, a payload that cannot be decoded), runs the call
under the job's timeout and context through the worker kind's ``_execute`` (the seam a
kind overrides), and turns the outcome into a result or a retry. :class:`Threads` and
:func:`run_to_completion` are the pieces a kind reuses to run calls off the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import random
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._codec import decode_call, decode_continuation, decode_value, encode_attempt
from ._leases import exhausted
from .backend import Finish
from .errors import Cancelled, ChainFailed, SerializationError, SitqError, TaskTimeout
from .job import Job
from .result import ErrorInfo, Status
from .serializers import Serializer, check_accept

if TYPE_CHECKING:
    from ._fetch import Active
    from .worker import Worker

__all__ = ["Attempts", "Counters", "JobCall", "Threads", "run_to_completion"]

log = logging.getLogger("sitq.worker")


@dataclass(slots=True)
class JobCall:
    """What :meth:`Worker._execute <sitq.Worker._execute>` runs: the job and its decoded
    call."""

    job: Job
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(slots=True)
class Counters:
    """What one worker did since it started (``worker.counters``)."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lost: int = 0


class Threads:
    """The thread pool a worker runs blocking calls in (``worker.threads``), each with a
    copy of the caller's context.

    A thread cannot be stopped: when the awaiting job is cancelled (timeout, cancel,
    shutdown) while its thread runs, the pool is left to that thread and later calls get
    a fresh one, so they never queue (and time out) behind it.
    """

    def __init__(self, size: int, prefix: str = "sitq-job") -> None:
        self.size = size
        self.prefix = prefix
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def run(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``func(*args, **kwargs)`` in a thread of the pool."""
        executor = self._executor
        if executor is None:
            executor = self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.size, thread_name_prefix=self.prefix
            )
        future = executor.submit(contextvars.copy_context().run, func, *args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancel() and not future.done() and self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False)
            raise

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def run_to_completion(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call ``func`` here; an awaitable it returns is run on a fresh event loop (for calls
    in a thread or a child process, away from the worker's loop)."""
    value = func(*args, **kwargs)
    if inspect.isawaitable(value):
        return asyncio.run(_awaited(value))
    return value


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


@functools.lru_cache(maxsize=4096)
def _is_coroutine_function(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func)


def is_coroutine_function(func: Callable[..., Any]) -> bool:
    """``inspect.iscoroutinefunction``, remembered per function (asked on every job)."""
    try:
        return _is_coroutine_function(func)
    except TypeError:  # an unhashable callable object
        return inspect.iscoroutinefunction(func)


class Attempts:
    """Runs claimed attempts for ``worker`` through ``execute`` (its kind's ``_execute``)."""

    def __init__(self, worker: Worker, execute: Callable[[JobCall], Awaitable[Any]]) -> None:
        self.worker = worker
        self.execute = execute
        self._serializers: dict[str, Serializer] = {}

    async def run(self, entry: Active, started: float) -> Finish | None:
        """The attempt's outcome; ``None`` when its lease was lost (nothing to record)."""
        job = entry.job
        lost = exhausted(job, self.worker.max_lease_expiries)
        if lost is not None:
            return self.failed(job, lost, None, started)
        if job.cancel_requested:
            # Cancelled while a previous attempt ran, and that worker died: do not run it.
            return self.failed(job, Cancelled("the job was cancelled while running"), None,
                               started)
        try:
            call = self.prepare(job)
        except SitqError as exc:
            log.error("job %s (%s) cannot run: %s", job.id, job.task, exc)
            return self.failed(job, exc, None, started)
        except Exception as exc:  # a bug in a serializer plugin: still fail the job now
            log.exception("job %s (%s) cannot run", job.id, job.task)
            return self.failed(job, exc, traceback.format_exc(), started)
        entry.executing = True
        timeout_cm = asyncio.timeout(job.timeout) if job.timeout else None
        try:
            with self.worker.context.restore(job.headers):
                if timeout_cm is not None:
                    async with timeout_cm:
                        value = await self.execute(call)
                else:
                    value = await self.execute(call)
        except asyncio.CancelledError as exc:
            entry.executing = False
            reason = entry.cancel_reason
            if reason == "cancel":
                return self.failed(job, Cancelled("the job was cancelled while running"),
                                   None, started)
            if reason == "lost":
                self.worker.counters.lost += 1
                return None
            if reason == "shutdown":
                self.worker.counters.released += 1
                return Finish(job, "release")
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # cancelled from outside (the loop is shutting down)
            # The task raised CancelledError itself (e.g. a future it awaited was
            # cancelled): an ordinary failure, with its traceback.
            return self.on_error(job, exc, traceback.format_exc(), started)
        except (Exception, SystemExit) as exc:
            # SystemExit too: a task calling sys.exit() (argparse, click, scripts) fails
            # its job; it must not stop the worker and every job it runs.
            entry.executing = False
            error: BaseException = exc
            tb: str | None = getattr(exc, "__sitq_traceback__", None) or traceback.format_exc()
            if timeout_cm is not None and timeout_cm.expired():
                error = TaskTimeout(f"the job ran longer than its timeout of {job.timeout}s")
                tb = None
            return self.on_error(job, error, tb, started)
        entry.executing = False
        try:
            result = self.result(job, "success", value, None, None, started)
        except Exception as exc:
            err = SerializationError(
                f"the return value of {job.task} ({type(value).__name__}) could not be "
                f"serialized with {job.serializer!r}: {exc}. Return plain data or choose "
                "another serializer"
            )
            return self.failed(job, err, None, started)
        self.worker.counters.succeeded += 1
        if job.chain:
            entry.value = value
        return Finish(job, "success", result)

    def prepare(self, job: Job) -> JobCall:
        """Check, verify and decode the job's call. Raises a SitqError subclass."""
        worker = self.worker
        if worker.accept is not None:
            check_accept(job.serializer, worker.accept)
        serializer = self._serializers.get(job.serializer) or self.serializer(job.serializer)
        func, args, kwargs = decode_call(job.payload, serializer, worker.signer, job.task)
        if job.chain:
            rest = decode_continuation(job.chain)
            if rest.failed is not None:
                raise ChainFailed(f"step {rest.failed[0]} of this chain failed: "
                                  f"{rest.failed[1]}")
            if rest.previous is not None:
                args = (decode_value(rest.previous, serializer, worker.signer), *args)
        return JobCall(job, func, args, kwargs)

    def serializer(self, name: str) -> Serializer:
        """The serializer a job names (a clear error if it is not installed)."""
        try:
            serializer = self.worker.registry.serializer(name)
        except SitqError as exc:
            raise SerializationError(f"job uses serializer {name!r}: {exc}") from exc
        self._serializers[name] = serializer
        return serializer

    def on_error(self, job: Job, exc: BaseException, tb: str | None, started: float) -> Finish:
        """A retry with a backoff (exponential, full jitter, capped) while retries are
        left; the failure otherwise."""
        job.failures += 1
        worker = self.worker
        if job.failures <= job.max_retries:
            delay = random.uniform(
                0, min(worker.retry_backoff_max, worker.retry_backoff * 2 ** (job.failures - 1))
            )
            worker.counters.retried += 1
            log.warning("job %s (%s) raised %s; retry %d/%d in %.2fs", job.id, job.task,
                        ErrorInfo.from_exception(exc), job.failures, job.max_retries, delay)
            return Finish(job, "retry", None, delay)
        log.error("job %s (%s) failed: %s", job.id, job.task, ErrorInfo.from_exception(exc))
        return self.failed(job, exc, tb, started)

    def failed(self, job: Job, exc: BaseException, tb: str | None, started: float) -> Finish:
        self.worker.counters.failed += 1
        data = self.result(job, "failed", None, ErrorInfo.from_exception(exc), tb, started)
        return Finish(job, "failed", data)

    def result(
        self, job: Job, status: Status, value: Any, error: ErrorInfo | None, tb: str | None,
        started: float,
    ) -> bytes:
        worker = self.worker
        serializer = self._serializers.get(job.serializer)
        if serializer is None:
            try:
                serializer = self.serializer(job.serializer)
            except SitqError:
                serializer = worker.registry.serializer("msgpack")
        return encode_attempt(job, status, value, error, tb, started, worker.id, serializer,
                              worker.signer)
