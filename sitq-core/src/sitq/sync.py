"""SyncTaskQueue: the same API as TaskQueue, blocking, for code that is not async.

It drives one :class:`TaskQueue` on an internal event-loop thread through anyio's blocking
portal (no second implementation). Calls are safe from many threads at once, including
the worker threads of a running event loop's thread pool.
"""

from __future__ import annotations

import atexit
import functools
import sys
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import CancelledError, Future
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, ParamSpec, Self, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .backend import Backend, QueueStats
from .errors import SitqError
from .queue import Batch, BoundQueue, JobInfo, Task, TaskQueue, _BoundTask
from .result import Result

__all__ = ["SyncBatch", "SyncBoundQueue", "SyncBoundTask", "SyncTask", "SyncTaskQueue"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _Portal:
    """The event-loop thread of one :class:`SyncTaskQueue` and the calls waiting on it.

    It holds no reference to the queue, so a queue nobody closed is freed (and its thread
    stopped, by ``__del__``) as soon as its last reference goes.
    """

    def __init__(self) -> None:
        self._cm: AbstractContextManager[BlockingPortal] | None = start_blocking_portal()
        self.portal: BlockingPortal | None = self._cm.__enter__()
        self.closing = False
        self._calls: set[Future[Any]] = set()
        self._calls_lock = threading.Lock()

    def call(self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        portal = self.portal
        if portal is None or self.closing:
            raise SitqError("this SyncTaskQueue is closed; create a new one")
        try:
            future = portal.start_task_soon(functools.partial(func, *args, **kwargs))
        except RuntimeError:  # closed by another thread a moment ago
            raise SitqError("this SyncTaskQueue is closed; create a new one") from None
        with self._calls_lock:
            self._calls.add(future)
        try:
            return future.result()
        except CancelledError:
            if self.closing:
                raise SitqError(
                    "this SyncTaskQueue was closed (by another thread) while the call waited"
                ) from None
            raise
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt here: do not leave the call running
            raise
        finally:
            with self._calls_lock:
                self._calls.discard(future)

    def close(
        self, aclose: Callable[[], Awaitable[None]] | None, timeout: float | None = None
    ) -> None:
        """End the calls other threads are waiting on, run ``aclose`` (up to ``timeout``
        seconds), stop the thread."""
        portal = self.portal
        if portal is None:
            return
        self.closing = True
        with self._calls_lock:
            waiting = list(self._calls)
        for future in waiting:
            future.cancel()
        try:
            if aclose is not None:
                portal.start_task_soon(aclose).result(timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        cm, self._cm, portal, self.portal = self._cm, None, self.portal, None
        self.closing = True
        if portal is not None:
            try:
                portal.call(portal.stop, True)  # cancel whatever still runs on it
            except RuntimeError:
                pass
        if cm is not None:
            cm.__exit__(None, None, None)


class SyncBoundQueue:
    """Blocking view of a :class:`BoundQueue` (``sync_queue.options(...)``)."""

    def __init__(self, owner: SyncTaskQueue, bound: BoundQueue) -> None:
        self._owner = owner
        self._bound = bound

    def _root(self) -> SyncTaskQueue:
        return self._owner

    def options(self, **options: Any) -> SyncBoundQueue:
        return SyncBoundQueue(self._root(), self._bound.options(**options))

    def enqueue(
        self, func: Callable[..., Any], /, *args: Any, eta: datetime | None = None, **kwargs: Any
    ) -> str:
        return self._root()._call(self._bound.enqueue, func, *args, eta=eta, **kwargs)

    def enqueue_many(
        self, func: Callable[..., Any], calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]
    ) -> list[str]:
        return self._root()._call(self._bound.enqueue_many, func, list(calls))

    def batch(self) -> SyncBatch:
        return SyncBatch(self._root(), self._bound.batch())


class SyncBatch:
    """``with queue.batch() as b: b.enqueue(...)`` — flushed in one round trip on exit."""

    def __init__(self, owner: SyncTaskQueue, batch: Batch) -> None:
        self._owner = owner
        self._batch = batch

    @property
    def ids(self) -> list[str]:
        return self._batch.ids

    def enqueue(
        self, func: Callable[..., Any], /, *args: Any, eta: datetime | None = None, **kwargs: Any
    ) -> str:
        return self._batch.enqueue(func, *args, eta=eta, **kwargs)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self._owner._call(self._batch.flush)


#: Queues not closed yet, closed at interpreter exit while their threads still run.
_open_queues: weakref.WeakSet[SyncTaskQueue] = weakref.WeakSet()


def _close_at_exit() -> None:
    for queue in list(_open_queues):
        queue._close_unclosed("at exit", timeout=5.0)


# atexit callbacks run before the interpreter freezes daemon threads (the event-loop
# threads): after that, a close() from __del__ would wait on a thread that never runs.
atexit.register(_close_at_exit)


class SyncTaskQueue(SyncBoundQueue):
    """Blocking producer API: ``with SyncTaskQueue("sqlite:///tasks.db") as queue: ...``.

    Takes the same arguments as :class:`TaskQueue`. Call :meth:`close` (or use ``with``)
    to stop its event-loop thread. A queue that is never closed (a module-level queue,
    as in a Flask app) is closed when it is garbage-collected or when the interpreter
    exits, with a :class:`ResourceWarning`. ``close()`` ends calls other threads are still
    waiting on (they raise :class:`SitqError`).
    """

    def __init__(self, backend: str | Backend | None = None, **options: Any) -> None:
        self._lock = threading.Lock()
        self._portal: _Portal | None = _Portal()
        try:
            self.queue: TaskQueue = self._portal.call(_make_queue, backend, options)
        except BaseException:
            self._portal.stop()
            self._portal = None
            raise
        # Not SyncBoundQueue.__init__: a queue is its own root, and a reference to itself
        # would keep an unclosed queue (and its thread) alive until a gc cycle.
        self._bound = self.queue
        _open_queues.add(self)

    def __repr__(self) -> str:
        return f"<SyncTaskQueue {self.queue.backend.url or self.queue.backend!r}>"

    def _root(self) -> SyncTaskQueue:
        return self

    def _call(self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        portal = self._portal
        if portal is None:
            raise SitqError("this SyncTaskQueue is closed; create a new one")
        return portal.call(func, *args, **kwargs)

    def close(self) -> None:
        """Close the backend connection and stop the internal event-loop thread."""
        self._close(None)

    def _close(self, timeout: float | None) -> None:
        with self._lock:
            portal, self._portal = self._portal, None
            _open_queues.discard(self)
            if portal is not None:
                portal.close(self.queue.aclose, timeout)

    def _close_unclosed(self, when: str, timeout: float) -> None:
        warnings.warn(
            f"{self!r} was never closed; sitq closed it {when}. Call queue.close() when "
            "you are done with it, or use `with SyncTaskQueue(...) as queue:`",
            ResourceWarning, stacklevel=2,
        )
        try:
            self._close(timeout)
        except Exception:
            pass

    def __enter__(self) -> Self:
        self._call(self.queue.connect)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_portal", None) is None:
            return
        if sys.is_finalizing():
            return  # its daemon thread is frozen now: waiting on it would never return
        self._close_unclosed("when it was garbage-collected", timeout=5.0)

    @property
    def backend(self) -> Backend:
        return self.queue.backend

    def task(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """``@queue.task(...)``; the returned task's ``enqueue`` blocks."""
        def wrap(f: Callable[..., Any]) -> SyncTask:
            return SyncTask(self, self.queue.task(f, **options) if options else self.queue.task(f))

        return wrap(func) if func is not None else wrap

    def get_result(self, job_id: str, timeout: float | None = 0.0) -> Result[Any] | None:
        return self._call(self.queue.get_result, job_id, timeout)

    def cancel(self, job_id: str) -> bool:
        return self._call(self.queue.cancel, job_id)

    def inspect(self, job_id: str) -> JobInfo:
        return self._call(self.queue.inspect, job_id)

    def stats(self, queues: Iterable[str] | None = None) -> dict[str, QueueStats]:
        return self._call(self.queue.stats, queues)

    def purge(self, queues: Iterable[str] | None = None) -> int:
        return self._call(self.queue.purge, queues)


class SyncTask:
    """A ``@sync_queue.task`` function: call it to run here, ``.enqueue`` to send it."""

    def __init__(self, owner: SyncTaskQueue, task: Task[Any, Any]) -> None:
        self._owner = owner
        self._task = task
        self.__sitq_func__ = task.__sitq_func__
        self.__sitq_options__ = task.__sitq_options__
        functools.update_wrapper(self, task.__sitq_func__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__sitq_func__(*args, **kwargs)

    def enqueue(self, *args: Any, **kwargs: Any) -> str:
        return self._owner._call(self._task.enqueue, *args, **kwargs)

    def options(self, **options: Any) -> SyncBoundTask:
        """A view with options overridden for one call: ``.options(queue="x").enqueue(...)``."""
        return SyncBoundTask(self._owner, self._task.options(**options))


class SyncBoundTask:
    """Blocking view of ``task.options(...)``."""

    def __init__(self, owner: SyncTaskQueue, bound: _BoundTask) -> None:
        self._owner = owner
        self._bound = bound

    def enqueue(self, *args: Any, **kwargs: Any) -> str:
        return self._owner._call(self._bound.enqueue, *args, **kwargs)


async def _make_queue(backend: str | Backend | None, options: dict[str, Any]) -> TaskQueue:
    return TaskQueue(backend, **options)
