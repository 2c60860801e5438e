"""Fetching: the concurrency slots a worker fills, and the loop that claims jobs for them.

:class:`Slots` holds the attempts a worker has claimed and counts the slots they take.
:class:`Fetcher` claims as many due jobs as there are free slots, hands each to the
worker, and otherwise waits: for a slot to free, for the store to announce new jobs
(``Backend.wait_for_jobs``), or for the worker to stop. A failing store is retried with
a capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .job import Job

if TYPE_CHECKING:
    from ._shutdown import Shutdown
    from .worker import Worker

log = logging.getLogger("sitq.worker")


@dataclass(slots=True)
class Active:
    """One claimed attempt while the worker holds it."""

    job: Job
    task: asyncio.Task[None] | None = None
    executing: bool = False
    #: Why the task was cancelled: "cancel", "lost" (heartbeat) or "shutdown".
    cancel_reason: str | None = None
    #: The return value, kept for a chain's next step.
    value: Any = None
    holds_slot: bool = True


class Slots:
    """The attempts a worker holds and the ``concurrency`` slots they take.

    Attempts are keyed by (id, attempt): a quick retry of a job can be claimed again by
    this worker while the previous attempt is still being recorded. An attempt gives its
    slot back as soon as it has run (:meth:`release`), while it stays in ``active`` (its
    lease renewed) until its outcome is recorded (:meth:`forget`).
    """

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.active: dict[tuple[str, int], Active] = {}
        self.busy = 0
        #: Set when a slot frees (and by a stop, to wake the fetch loop).
        self.freed = asyncio.Event()

    @property
    def free(self) -> int:
        return self.concurrency - self.busy

    def take(self, job: Job) -> Active:
        entry = Active(job)
        self.active[(job.id, job.attempt)] = entry
        self.busy += 1
        return entry

    def release(self, entry: Active) -> None:
        if entry.holds_slot:
            entry.holds_slot = False
            self.busy -= 1
            self.freed.set()

    def forget(self, entry: Active) -> None:
        self.active.pop((entry.job.id, entry.job.attempt), None)
        self.release(entry)
        self.freed.set()  # a burst worker waits for the last attempts to be recorded

    def running(self) -> list[Active]:
        """The attempts whose task has not ended."""
        return [a for a in self.active.values() if a.task is not None and not a.task.done()]


class Fetcher:
    """The fetch loop of ``worker``: claims into ``slots`` and calls ``spawn`` per job."""

    def __init__(
        self, worker: Worker, slots: Slots, shutdown: Shutdown, spawn: Callable[[Job], None]
    ) -> None:
        self.worker = worker
        self.backend = worker.backend
        self.slots = slots
        self.shutdown = shutdown
        self.spawn = spawn
        self._wait_failing = False

    async def run(self) -> None:
        """Claim until the worker stops (or, in burst mode, until nothing is left)."""
        worker, slots, backend = self.worker, self.slots, self.backend
        failures = 0
        while not self.shutdown.requested:
            free = slots.free
            if free <= 0:
                slots.freed.clear()
                await slots.freed.wait()
                continue
            try:
                jobs = await backend.claim(worker.queues, limit=free, lease=worker.lease,
                                           worker=worker.id)
                failures = 0
            except Exception as exc:
                failures += 1
                delay = min(0.1 * 2**failures, 5.0) * (0.5 + random.random() / 2)
                log.warning("claim from %r failed (%s); retrying in %.2fs", backend, exc, delay)
                await self.shutdown.sleep(delay)
                continue
            if not jobs:
                if worker.burst and not slots.active:
                    break
                await self._wait_for_work()
                continue
            for job in jobs:
                self.spawn(job)
            if len(jobs) < free and backend.supports_notifications and not worker.burst:
                # The queues ran dry: wait to be told about new jobs instead of asking
                # again at once (that empty claim would delay the finish of these jobs).
                await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        worker, freed = self.worker, self.slots.freed
        freed.clear()
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self.backend.wait_for_jobs(worker.queues, 1.0)),
            asyncio.ensure_future(self.shutdown.wait()),
        ]
        if worker.burst:
            waits.append(asyncio.ensure_future(freed.wait()))
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
            await self.shutdown.sleep(1.0)
        else:
            self._wait_failing = False
