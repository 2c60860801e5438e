"""Worker: the coordinator of the parts that run jobs. Open this module first.

``Worker`` itself is the default ``async`` kind: coroutine functions run on the event
loop, plain functions in a thread (with a copy of the context). Other kinds subclass it
and override only :meth:`Worker._execute`. One job goes down this path:

* :mod:`sitq._fetch` claims due jobs into free concurrency slots;
* :mod:`sitq._execute` checks and decodes the job and runs it through ``_execute``,
  under its timeout and context, turning the outcome into a result or a retry;
* :mod:`sitq._continuation` enqueues a chain's next step;
* :mod:`sitq._finish` records finished attempts in batches;

while :mod:`sitq._leases` renews the leases of held jobs and :mod:`sitq._shutdown`
handles signals, ``stop()`` and the graceful drain.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import itertools
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from ._continuation import continue_chain
from ._execute import Attempts, Counters, JobCall, Threads, is_coroutine_function, run_to_completion
from ._fetch import Active, Fetcher, Slots
from ._finish import Finisher
from ._leases import heartbeat
from ._shutdown import Shutdown
from .backend import Backend
from .config import Settings, load_settings
from .context import ContextPropagator, ContextWrapper
from .errors import BackendError, ConfigurationError
from .job import Job
from .plugins import Registry, get_registry
from .serializers import Signer

__all__ = ["JobCall", "Threads", "Worker", "create_worker", "run_to_completion"]

log = logging.getLogger("sitq.worker")

_counter = itertools.count(1)


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
        self.counters = Counters()
        #: The threads plain functions run in (a kind may run every call there).
        self.threads = Threads(self.concurrency)
        self._attempts = Attempts(self, self._execute)
        self._shutdown = Shutdown(shutdown_grace)
        self._slots: Slots | None = None
        self._finisher: Finisher | None = None
        self._main: asyncio.Task[None] | None = None
        self._started = threading.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.backend!r} queues={self.queues}>"

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Run until stopped. Imports ``app`` first so its tasks can be resolved."""
        if self.app:
            import_app(self.app)
        slots = self._slots = Slots(self.concurrency)
        shutdown = self._shutdown
        shutdown.arm(wake=slots.freed)
        loop = asyncio.get_running_loop()
        # Connect before taking over the signals: if the store is unreachable, start()
        # raises and leaves the process's signal handling as it found it.
        await self.backend.connect()
        if self.handle_signals:
            shutdown.install_signals(loop)
        finisher = self._finisher = Finisher(self.backend, self._recorded)
        finisher.start()
        side_tasks = [asyncio.create_task(heartbeat(self.backend, slots, self.lease),
                                          name="sitq-heartbeat")]
        if self.scheduler:
            side_tasks.append(asyncio.create_task(self._run_scheduler(), name="sitq-scheduler"))
        try:
            log.info("worker %s (%s) consuming %s from %r, concurrency %d",
                     self.id, self.kind, ",".join(self.queues), self.backend, self.concurrency)
            self._started.set()
            await Fetcher(self, slots, shutdown, self._spawn).run()
            await shutdown.drain(slots, finisher)
        finally:
            if slots.active:
                # start() itself was cancelled (or failed): release the running jobs now
                # instead of leaving their tasks behind without heartbeats or a finisher.
                shutdown.request(0.0)
                try:
                    async with asyncio.timeout(10):
                        await shutdown.drain(slots, finisher)
                except TimeoutError:
                    log.warning("could not release %d job(s) while stopping; their leases "
                                "will expire", len(slots.active))
            for task in side_tasks:
                task.cancel()
            await asyncio.gather(*side_tasks, return_exceptions=True)
            await finisher.close()
            shutdown.remove_signals(loop)
            self.threads.shutdown()
            if self._owns_backend:
                await self.backend.aclose()
            log.info("worker %s stopped", self.id)

    async def _run_scheduler(self) -> None:
        from .queue import TaskQueue
        from .scheduling import Scheduler

        queue = TaskQueue(self.backend, settings=self.settings, registry=self.registry,
                          context=self.context)
        self.scheduler_runner = Scheduler(queue)
        await self.scheduler_runner.run(self._shutdown.event)

    async def stop(self, grace: float | None = None) -> None:
        """Stop fetching; let running jobs finish within ``grace`` seconds (default
        ``shutdown_grace``), then release the rest back to the queue."""
        self._shutdown.request(grace)
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

    # ------------------------------------------------------------------ one job
    def _spawn(self, job: Job) -> None:
        assert self._slots is not None
        self.counters.claimed += 1
        entry = self._slots.take(job)
        entry.task = asyncio.create_task(self._process(entry))

    async def _process(self, entry: Active) -> None:
        """Run one claimed attempt, continue its chain, and hand it to the finisher."""
        assert self._slots is not None and self._finisher is not None
        job = entry.job
        submitted = False
        try:
            item = await self._attempts.run(entry, time.time())
            if item is not None and job.chain and item.outcome in ("success", "failed"):
                await continue_chain(self.backend, self._attempts, item, entry.value)
            if item is not None:
                if len(self._finisher.pending) < self.concurrency:
                    # The job has run: its slot takes the next job while the result is
                    # recorded (the entry stays active, so its lease is still renewed).
                    self._slots.release(entry)
                self._finisher.submit(item, entry)  # _recorded() ends the entry
                submitted = True
        except BackendError as exc:
            log.error("job %s: could not record its outcome (%s); its lease will expire and "
                      "it will run again", job.id, exc)
        except Exception:
            log.exception("job %s: internal error while finishing it", job.id)
        finally:
            if not submitted:
                self._slots.forget(entry)

    def _recorded(self, entry: Active, outcome: bool | BaseException) -> None:
        """The finisher wrote (or gave up on) this attempt's outcome."""
        assert self._slots is not None
        if outcome is not True:
            job = entry.job
            if outcome is False:
                self.counters.lost += 1
                log.warning("job %s: result not recorded, its lease was taken over", job.id)
            else:
                log.error("job %s: could not record its outcome (%s); its lease will expire "
                          "and it will run again", job.id, outcome)
        self._slots.forget(entry)

    # ------------------------------------------------------------------ execution
    async def _execute(self, call: JobCall) -> Any:
        """Run one call and return its value. Kinds override this.

        Coroutine functions are awaited on the loop; plain functions run in a thread of
        :attr:`threads` with a copy of the current context (a thread cannot be killed:
        on timeout its result is discarded).
        """
        if is_coroutine_function(call.func):
            return await call.func(*call.args, **call.kwargs)
        value = await self.threads.run(call.func, *call.args, **call.kwargs)
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
