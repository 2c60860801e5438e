"""ThreadWorker: every job runs in a thread of the worker's pool.

Plain functions run as in the default kind; coroutine functions get a fresh event loop in
their thread, so async code that blocks cannot stall the worker's own loop. A thread
cannot be killed: on timeout or cancel the job is failed and its thread's result dropped.
The abandoned thread keeps running, so later jobs get a fresh pool instead of queueing
behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
from typing import Any, ClassVar

from sitq import JobCall, Worker


def _run(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    value = func(*args, **kwargs)
    if inspect.isawaitable(value):
        return asyncio.run(_await(value))
    return value


async def _await(awaitable: Any) -> Any:
    return await awaitable


class ThreadWorker(Worker):
    kind: ClassVar[str] = "thread"

    async def _execute(self, call: JobCall) -> Any:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="sitq-thread"
            )
        executor = self._executor
        ctx = contextvars.copy_context()
        future = executor.submit(ctx.run, _run, call.func, call.args, call.kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # Timeout, cancel or shutdown. A thread that has started cannot be stopped: it
            # keeps its slot of the pool until the function returns. Later jobs get a new
            # pool so they never wait (and time out) behind it.
            if not future.cancel() and not future.done() and self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False)
            raise
