"""ThreadWorker: every job runs in a thread of the worker's pool.

Plain functions run as in the default kind; coroutine functions get a fresh event loop in
their thread, so async code that blocks cannot stall the worker's own loop. A thread
cannot be killed: on timeout or cancel the job is failed and its thread's result dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
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
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(ctx.run, _run, call.func, call.args, call.kwargs)
        )
