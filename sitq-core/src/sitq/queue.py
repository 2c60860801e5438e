"""TaskQueue: the async producer API (enqueue, options, results, cancel, inspect)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

from ._arguments import Check, arguments_checker
from ._codec import call_encoder, decode_result, encode_cancelled, task_name
from .backend import Backend, QueueStats
from .config import Settings, load_settings
from .context import ContextPropagator, ContextWrapper
from .errors import ConfigurationError, InvalidArguments, JobNotFound
from .job import (
    Job,
    JobOptions,
    deferred_job_id,
    is_deferred_id,
    job_builder,
    new_job_id,
    utcnow,
)
from .plugins import Registry, get_registry
from .result import Result
from .scheduling import Schedule, register_schedule
from .serializers import Serializer, Signer

__all__ = ["Batch", "BoundQueue", "JobInfo", "Task", "TaskQueue"]

P = ParamSpec("P")
R = TypeVar("R")

#: How many jobs ``enqueue_many`` sends per round trip.
CHUNK = 1000


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What ``inspect(job_id)`` reports about one job."""

    id: str
    state: str  # queued | scheduled | running | success | failed
    task: str | None
    queue: str | None
    attempts: int
    eta: datetime | None = None
    created_at: datetime | None = None
    lease_until: datetime | None = None
    worker: str | None = None
    result: Result[Any] | None = None


class BoundQueue:
    """A cheap view of a :class:`TaskQueue` with job options bound (``queue.options(...)``)."""

    def __init__(self, queue: TaskQueue, opts: JobOptions) -> None:
        self._queue = queue
        self._opts = opts

    def options(self, **options: Any) -> BoundQueue:
        """Another view with more options: ``delay``, ``eta``, ``retries``, ``timeout``,
        ``queue``, ``priority``, ``key``, ``serializer``, ``result_ttl``, ``connection``."""
        return BoundQueue(self._queue, self._opts.merge(**options))

    def make_job(
        self, func: Callable[..., Any], args: tuple[Any, ...] | list[Any],
        kwargs: Mapping[str, Any], *, eta: datetime | None = None, chained: bool = False,
    ) -> Job:
        """The :class:`Job` of ``func(*args, **kwargs)`` with this view's options (the
        context captured and the eta resolved now), not sent yet: :meth:`enqueue_jobs`
        sends it (as :class:`Batch` and :class:`~sitq.Chain` do). ``chained``: a chain's
        later step, called with the previous step's value before ``args``.

        Raises :class:`InvalidArguments` when the call does not fit ``func``'s signature."""
        queue = self._queue
        recipe = queue._recipe(func, self._opts if eta is None else self._opts.merge(eta=eta))
        recipe.check((None, *args) if chained else args, kwargs)
        headers = queue.context.capture() if queue.context else {}
        job = recipe.job(args, kwargs, headers, recipe.eta())
        if self._opts.connection is not None:
            job.id = deferred_job_id()  # stored when the caller's transaction commits
        return job

    async def enqueue(
        self, func: Callable[..., Any], /, *args: Any, eta: datetime | None = None, **kwargs: Any
    ) -> str:
        """Enqueue ``func(*args, **kwargs)``; returns the job id."""
        job = self.make_job(func, args, kwargs, eta=eta)
        connection = self._opts.connection
        if connection is not None:
            return await self._queue.backend.enqueue(job, connection=connection)
        return await self._queue.backend.enqueue(job)

    async def enqueue_jobs(self, jobs: Sequence[Job]) -> list[str]:
        """Send jobs made by :meth:`make_job`, in chunks of 1,000 (a round trip each);
        returns the ids the backend returned."""

        async def chunks() -> AsyncIterator[Sequence[Job]]:
            for start in range(0, len(jobs), CHUNK):
                yield jobs[start : start + CHUNK]

        return await _send_chunks(self._queue.backend, chunks(), self._opts.connection)

    async def enqueue_many(
        self, func: Callable[..., Any], calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]
    ) -> list[str]:
        """Enqueue one job per item: a tuple of positional args or a mapping of kwargs.

        Jobs go to the backend in chunks of 1,000, one round trip per chunk.
        """
        queue = self._queue
        recipe = queue._recipe(func, self._opts)
        # One context and one eta for every job of the call.
        headers = queue.context.capture() if queue.context else None
        eta = recipe.eta()
        check = recipe.check
        # A job enqueued in the caller's transaction is stored when that commits.
        deferred = self._opts.connection is not None

        async def make() -> AsyncIterator[list[Job]]:
            chunk: list[Job] = []
            for number, item in enumerate(calls, 1):
                if type(item) is tuple:  # the usual item, before the slower checks
                    args: tuple[Any, ...] = item
                    kwargs: Mapping[str, Any] = {}
                elif isinstance(item, Mapping):
                    args, kwargs = (), item
                elif isinstance(item, tuple | list):
                    args, kwargs = tuple(item), {}
                else:
                    raise ConfigurationError(
                        f"enqueue_many takes tuples of positional arguments or dicts of "
                        f"keyword arguments, got {type(item).__name__} {item!r}; wrap a single "
                        "argument as (value,)"
                    )
                try:
                    check(args, kwargs)
                except InvalidArguments as exc:
                    raise InvalidArguments(f"enqueue_many item {number}: {exc}") from None
                job = recipe.job(args, kwargs, dict(headers) if headers else {}, eta)
                if deferred:
                    job.id = deferred_job_id()
                chunk.append(job)
                if len(chunk) >= CHUNK:
                    yield chunk
                    chunk = []
                elif len(chunk) % 100 == 0:
                    await asyncio.sleep(0)  # the chunk in flight gets sent meanwhile
            if chunk:
                yield chunk

        return await _send_chunks(queue.backend, make(), self._opts.connection)

    def batch(self) -> Batch:
        """``async with queue.batch() as b: b.enqueue(f, 1)`` — flushed together on exit."""
        return Batch(self)

    def cron(
        self,
        expression: str,
        func: Callable[..., Any],
        /,
        *args: Any,
        name: str | None = None,
        tz: str = "UTC",
        misfire_grace: float = 60.0,
        **kwargs: Any,
    ) -> Schedule:
        """Declare a cron schedule (synchronous; nothing is stored until a scheduler runs).

        ``queue.cron("*/5 * * * *", report, "daily", tz="Europe/Berlin")`` enqueues
        ``report("daily")`` every five minutes with this view's options. ``name`` (default:
        the function's ``module:qualname``) identifies the schedule's ticks in the backend.
        """
        arguments_checker(func)(args, kwargs)
        schedule = Schedule(
            name or task_name(func), expression, func, tuple(args), dict(kwargs), tz,
            misfire_grace, self._opts, self._queue.default_queue,
        )
        return register_schedule(schedule)

    def periodic(
        self, expression: str, *, name: str | None = None, tz: str = "UTC",
        misfire_grace: float = 60.0,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator form of :meth:`cron` for a function that takes no arguments."""

        def wrap(func: Callable[P, R]) -> Callable[P, R]:
            self.cron(expression, func, name=name, tz=tz, misfire_grace=misfire_grace)
            return func

        return wrap


async def _send_chunks(
    backend: Backend, chunks: AsyncIterator[Sequence[Job]], connection: Any = None
) -> list[str]:
    """Send chunks in order, one round trip each, building the next chunk while the
    previous one is in flight (a chunk is sent only after the one before it is stored),
    unless the backend says overlapping does not pay (``Backend.overlap_enqueue``) or
    the chunks go through the caller's ``connection`` (one transaction, one at a time)."""
    ids: list[str] = []
    if not backend.overlap_enqueue or connection is not None:
        async for chunk in chunks:
            ids += await backend.enqueue_many(chunk, connection=connection)
        return ids
    pending: asyncio.Task[list[str]] | None = None
    try:
        async for chunk in chunks:
            if pending is not None:
                ids += await pending
            pending = asyncio.ensure_future(backend.enqueue_many(chunk))
            await asyncio.sleep(0)  # let it send before the next chunk is built
        if pending is not None:
            ids += await pending
            pending = None
    finally:
        if pending is not None and not pending.done():
            await asyncio.gather(pending, return_exceptions=True)
    return ids


class Batch:
    """Collects enqueues of any tasks and sends them in one round trip on exit.

    ``batch.enqueue`` returns the new job's id at once; after the block, ``batch.ids``
    holds the ids the backend returned (different only for idempotency-key hits).
    """

    def __init__(self, bound: BoundQueue) -> None:
        self._bound = bound
        self._jobs: list[Job] = []
        self.ids: list[str] = []

    def enqueue(
        self, func: Callable[..., Any], /, *args: Any, eta: datetime | None = None, **kwargs: Any
    ) -> str:
        """Add ``func(*args, **kwargs)`` to the batch (``eta=`` as in
        :meth:`TaskQueue.enqueue`); returns the new job's id."""
        return self.add(self._bound.make_job(func, args, kwargs, eta=eta))

    def add(self, job: Job) -> str:
        """Add a job made by :meth:`BoundQueue.make_job`; returns its id."""
        self._jobs.append(job)
        return job.id

    def options(self, **options: Any) -> _BatchView:
        if options.get("connection") is not None:
            raise ConfigurationError(
                "a batch is sent in one go: give connection= to queue.options(...) before "
                "batch(), not to one call inside it"
            )
        return _BatchView(self, self._bound.options(**options))

    async def flush(self) -> list[str]:
        jobs, self._jobs = self._jobs, []
        ids = await self._bound.enqueue_jobs(jobs)
        self.ids += ids
        return ids

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            await self.flush()
        else:
            self._jobs.clear()


class _BatchView:
    def __init__(self, batch: Batch, bound: BoundQueue) -> None:
        self._batch = batch
        self._bound = bound

    def enqueue(
        self, func: Callable[..., Any], /, *args: Any, eta: datetime | None = None, **kwargs: Any
    ) -> str:
        return self._batch.add(self._bound.make_job(func, args, kwargs, eta=eta))


class Task(Generic[P, R]):
    """A function decorated with ``@queue.task(...)``.

    Calling it runs the function here; ``.enqueue(...)`` sends it to a worker with the
    options given to the decorator; ``.options(...)`` overrides them for one call.
    """

    def __init__(self, queue: TaskQueue, func: Callable[P, R], opts: JobOptions) -> None:
        self.queue = queue
        self.__sitq_func__ = func
        self.__sitq_options__ = opts
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__sitq_func__(*args, **kwargs)

    def options(self, **options: Any) -> _BoundTask:
        return _BoundTask(self, self.__sitq_options__.merge(**options))

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Send ``func(*args, **kwargs)`` to a worker (``eta=`` is taken, as by
        :meth:`TaskQueue.enqueue`)."""
        call_kwargs: dict[str, Any] = dict(kwargs)  # eta= among them, as for enqueue()
        return await BoundQueue(self.queue, self.__sitq_options__).enqueue(
            self.__sitq_func__, *args, **call_kwargs
        )

    async def enqueue_many(self, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]) -> list[str]:
        return await BoundQueue(self.queue, self.__sitq_options__).enqueue_many(
            self.__sitq_func__, calls
        )


class _BoundTask:
    def __init__(self, task: Task[Any, Any], opts: JobOptions) -> None:
        self._task = task
        self._opts = opts

    async def enqueue(self, *args: Any, **kwargs: Any) -> str:
        return await BoundQueue(self._task.queue, self._opts).enqueue(
            self._task.__sitq_func__, *args, **kwargs
        )


#: How many (function, options) recipes a TaskQueue keeps.
_RECIPES = 256
#: A new job's fields, in the order :meth:`_Recipe.job` passes them (see job_builder).
_new_job = job_builder("id", "queue", "task", "payload", "serializer", "headers", "priority",
                       "eta", "max_retries", "timeout", "key", "result_ttl")


class _Recipe:
    """What every job of one function with one set of options shares: the options
    merged with the task's, the task name, the payload encoder and the fixed fields."""

    __slots__ = ("check", "encode", "func", "inputs", "key", "max_retries", "name", "opts",
                 "priority", "queue", "result_ttl", "serializer", "timed", "timeout")

    def __init__(
        self,
        func: Callable[..., Any],
        opts: JobOptions,
        name: str,
        encode: Callable[[tuple[Any, ...] | list[Any], Mapping[str, Any]], bytes],
        queue: str,
        serializer: str,
        inputs: tuple[Any, ...],
    ) -> None:
        self.func, self.opts, self.name, self.encode = func, opts, name, encode
        self.queue, self.serializer, self.inputs = queue, serializer, inputs
        #: Raises InvalidArguments for a call that does not fit ``func``'s signature.
        self.check: Check = arguments_checker(func)
        self.priority, self.max_retries = opts.priority or 0, opts.retries or 0
        self.timeout, self.key, self.result_ttl = opts.timeout, opts.key, opts.result_ttl
        #: Whether a job gets an eta (``eta=`` or a non-zero ``delay=``).
        self.timed = opts.eta is not None or bool(opts.delay)

    def eta(self) -> datetime | None:
        """The eta of a job made now."""
        return self.opts.resolve_eta() if self.timed else None

    def job(self, args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any],
            headers: dict[str, str], eta: datetime | None) -> Job:
        return _new_job(new_job_id(), self.queue, self.name, self.encode(args, kwargs),
                        self.serializer, headers, self.priority, eta, self.max_retries,
                        self.timeout, self.key, self.result_ttl)


class TaskQueue(BoundQueue):
    """The async producer: ``async with TaskQueue("redis://...") as queue: ...``.

    ``backend`` is a URL (looked up by scheme among installed plugins) or a
    :class:`Backend` instance; when omitted, the ``backend`` setting is used
    (``SITQ_BACKEND``, ``[tool.sitq]``, default ``sqlite:///sitq.db``).
    """

    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        serializer: str | Serializer | None = None,
        secret_key: str | list[str] | None = None,
        context: ContextWrapper | list[ContextPropagator | str] | None = None,
        queue: str = "default",
        max_payload: int | None = None,
        result_ttl: float | None = None,
        registry: Registry | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._recipes: dict[Any, _Recipe] = {}
        self.registry = registry or get_registry()
        self.settings = settings or load_settings(
            {
                "backend": backend if isinstance(backend, str) else None,
                "serializer": serializer if isinstance(serializer, str) else None,
                "secret_key": secret_key,
                "max_payload": max_payload,
                "result_ttl": result_ttl,
            }
        )
        self.backend, _ = self.registry.resolve_backend(
            backend, self.settings.backend, self.settings.result_ttl
        )
        if serializer is None or isinstance(serializer, str):
            self.serializer: Serializer = self.registry.serializer(self.settings.serializer)
        else:
            self.serializer = serializer
        self.signer = Signer(self.settings.secret_key)
        self.context = ContextWrapper.coerce(
            context if context is not None else self.settings.context or None, self.registry
        )
        self.max_payload = self.settings.max_payload
        JobOptions(queue=queue).validate()
        #: Queue of jobs whose options (or task decorator) name none.
        self.default_queue = queue
        super().__init__(self, JobOptions())

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        await self.backend.connect()

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<TaskQueue {self.backend!r}>"

    # ------------------------------------------------------------------ jobs
    def _recipe(self, func: Callable[..., Any], opts: JobOptions) -> _Recipe:
        """The :class:`_Recipe` of jobs of ``func`` with ``opts``, resolved once and kept
        (up to ``_RECIPES`` of them): a plain ``enqueue`` then pays only for the call. A
        recipe made before the queue's serializer, signer, payload limit, default queue or
        registry changed is made again."""
        inputs = (self.serializer, self.signer, self.max_payload, self.default_queue,
                  self.registry)
        recipes = self._recipes
        try:
            key: Any = (id(func), opts)
            recipe = recipes.get(key)
        except TypeError:  # an option value that cannot be hashed: resolve every time
            return self._resolve(func, opts, inputs)
        if recipe is None or recipe.func is not func or recipe.inputs != inputs:
            recipe = self._resolve(func, opts, inputs)
            if len(recipes) >= _RECIPES:
                recipes.clear()
            recipes[key] = recipe  # holds ``func``, so its id() is not reused meanwhile
        return recipe

    def _resolve(
        self, func: Callable[..., Any], opts: JobOptions, inputs: tuple[Any, ...]
    ) -> _Recipe:
        """Resolve options, serializer and encoding for calls of ``func``."""
        if not callable(func):
            raise ConfigurationError(
                f"enqueue needs a callable as its first argument, got {type(func).__name__} "
                f"{func!r}"
            )
        task_opts = getattr(func, "__sitq_options__", None)
        if isinstance(task_opts, JobOptions):
            base = dict(
                (name, getattr(task_opts, name))
                for name in task_opts.__dataclass_fields__
                if getattr(task_opts, name) is not None
            )
            base.update(
                (name, getattr(opts, name))
                for name in opts.__dataclass_fields__
                if getattr(opts, name) is not None
            )
            opts = JobOptions().merge(**base)
        serializer = (
            self.serializer
            if opts.serializer is None or opts.serializer == self.serializer.name
            else self.registry.serializer(opts.serializer)
        )
        name, encode = call_encoder(func, serializer, self.signer, self.max_payload)
        return _Recipe(func, opts, name, encode, opts.queue or self.default_queue,
                       serializer.name, inputs)

    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, /, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self, func: Callable[P, R] | None = None, /, **options: Any
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Decorate a function: ``@queue.task`` or ``@queue.task(retries=3, timeout=30)``."""
        opts = JobOptions().merge(**options)

        def wrap(f: Callable[P, R]) -> Task[P, R]:
            return Task(self, f, opts)

        return wrap(func) if func is not None else wrap

    # ------------------------------------------------------------------ results
    def _decode(self, data: bytes) -> Result[Any]:
        return decode_result(data, self.registry.serializer, self.signer)

    async def get_result(self, job_id: str, timeout: float | None = 0.0) -> Result[Any] | None:
        """The job's :class:`Result`, waiting up to ``timeout`` seconds for it to finish.

        ``timeout=0`` (the default) looks once; ``None`` waits without limit. Returns
        ``None`` if the job has not finished in time; raises :class:`JobNotFound` at once
        for an id the backend does not hold (never enqueued there, purged, or expired).
        """
        backend = self.backend
        data = await backend.get_result(job_id)
        if data is None:
            # An id the store does not hold is an error at once, as for inspect() (a
            # chain's later step is stored only when the step before it has run).
            if not is_deferred_id(job_id) and await backend.get_job(job_id) is None:
                data = await backend.get_result(job_id)  # it finished in between
                if data is None:
                    raise JobNotFound(self._not_found(job_id))
            if data is None and (timeout is None or timeout > 0):
                data = await backend.wait_result(job_id, timeout)
        return None if data is None else self._decode(data)

    def _not_found(self, job_id: str) -> str:
        where = self.backend.url or repr(self.backend)
        return (
            f"no job with id {job_id!r} in {where}: it never "
            "existed there, was purged, or its result expired (result_ttl). Check that the "
            "program that enqueued it uses the same backend"
        )

    async def cancel(self, job_id: str) -> bool:
        """Remove a queued job (it ends ``failed`` with error ``Cancelled``) or ask a running
        one to stop (its worker cancels it at the next heartbeat). ``False`` if the job has
        already finished; :class:`JobNotFound` if the id is unknown."""
        job = await self.backend.get_job(job_id)  # for the result's task, queue and times
        result = encode_cancelled(job_id, job, self.serializer, self.signer)
        outcome = await self.backend.cancel(job_id, result)
        if outcome == "not_found":
            raise JobNotFound(self._not_found(job_id))
        return outcome in ("cancelled", "requested")

    async def inspect(self, job_id: str) -> JobInfo:
        """State of one job; :class:`JobNotFound` for an unknown id."""
        job = await self.backend.get_job(job_id)
        data = await self.backend.get_result(job_id)
        result = None if data is None else self._decode(data)
        if job is None and result is None:
            raise JobNotFound(self._not_found(job_id))
        if job is not None and (result is None or job.state in ("queued", "running")):
            state: str = job.state
            if state == "queued" and job.eta is not None and job.eta > utcnow():
                state = "scheduled"
            return JobInfo(
                id=job.id,
                state=state,
                task=job.task,
                queue=job.queue,
                attempts=job.attempt,
                eta=job.eta,
                created_at=job.created_at,
                lease_until=job.lease_until if job.state == "running" else None,
                worker=job.worker,
                result=result,
            )
        assert result is not None
        return JobInfo(
            id=job_id,
            state=result.status,
            task=result.task or (job.task if job else None),
            queue=result.queue or (job.queue if job else None),
            attempts=result.attempts,
            created_at=result.enqueued_at,
            worker=result.worker,
            result=result,
        )

    async def stats(self, queues: Iterable[str] | None = None) -> dict[str, QueueStats]:
        return await self.backend.stats(None if queues is None else list(queues))

    async def purge(self, queues: Iterable[str] | None = None) -> int:
        return await self.backend.purge(None if queues is None else list(queues))

