"""Chain: run tasks one after another, each receiving the previous one's value.

``await Chain(queue).then(fetch, url).then(parse).then(store).enqueue()`` enqueues the
first step and returns the id of the last one. The continuation travels with the job: the
worker that finishes a step enqueues the next (no client polls). A step that fails for
good fails the chain: each remaining step ends ``failed`` with error ``ChainFailed``
naming the step that broke it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._codec import Continuation, encode_continuation
from .errors import ChainFailed, ConfigurationError
from .job import Job, deferred_job_id

if TYPE_CHECKING:
    from .queue import BoundQueue

__all__ = ["Chain", "ChainFailed"]


class Chain:
    """A sequence of tasks; build it with :meth:`then`, send it with :meth:`enqueue`.

    Every step uses the options of the queue (or ``queue.options(...)`` view) the chain
    was created with. ``enqueue`` is one round trip: only the first step is stored until
    it has run.
    """

    def __init__(self, queue: BoundQueue) -> None:
        self._queue = queue
        self._steps: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def then(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Chain:
        """Add a step: ``func(previous_value, *args, **kwargs)`` (the first step gets only
        its own arguments)."""
        if not callable(func):
            raise ConfigurationError(f"Chain.then needs a callable, got {func!r}")
        self._steps.append((func, args, kwargs))
        return self

    def __len__(self) -> int:
        return len(self._steps)

    def jobs(self) -> list[Job]:
        """The step jobs, ids assigned, the first one carrying the rest."""
        if not self._steps:
            raise ConfigurationError("an empty Chain has nothing to enqueue; add steps "
                                     "with .then(func, ...)")
        jobs = [self._queue.make_job(f, a, k, chained=n > 0)
                for n, (f, a, k) in enumerate(self._steps)]
        for job in jobs[1:]:
            job.key = None  # an idempotency key names the whole chain: its first step
            job.id = deferred_job_id()  # stored when the step before has run
        if len(jobs) > 1:
            jobs[0].chain = encode_continuation(Continuation(jobs[1:]))
        return jobs

    async def enqueue(self) -> str:
        """Enqueue the first step; returns the id of the last step (its result is the
        chain's result)."""
        jobs = self.jobs()
        await self._queue.enqueue_jobs(jobs[:1])
        return jobs[-1].id

    async def ids(self) -> list[str]:
        """Enqueue like :meth:`enqueue`, returning the id of every step."""
        jobs = self.jobs()
        await self._queue.enqueue_jobs(jobs[:1])
        return [j.id for j in jobs]
