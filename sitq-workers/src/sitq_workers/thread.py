"""ThreadWorker: every job runs in a thread of the worker's pool.

Plain functions run as in the default kind; coroutine functions get a fresh event loop in
their thread, so async code that blocks cannot stall the worker's own loop. A thread
cannot be killed: on timeout or cancel the job is failed and its thread's result dropped.
The abandoned thread keeps running, so later jobs get a fresh pool instead of queueing
behind it (:class:`sitq.worker.Threads`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sitq import JobCall, Worker
from sitq.worker import run_to_completion


class ThreadWorker(Worker):
    kind: ClassVar[str] = "thread"

    async def _execute(self, call: JobCall) -> Any:
        return await self.threads.run(run_to_completion, call.func, call.args, call.kwargs)
