"""Cron schedules and the Scheduler that fires them.

Schedules are declared in code (``queue.cron(...)``, ``@queue.periodic(...)``) and found
by importing the app module. A scheduler runs inside workers (``Worker(scheduler=True)``,
``sitq worker --scheduler``) or alone (``sitq scheduler``). Each tick is claimed in the
backend (``claim_tick``) before its job is enqueued, so however many schedulers run, a tick
fires once. A tick missed by at most ``misfire_grace`` seconds (the scheduler was down or
late) fires once on return; older missed ticks are skipped and logged.

Expressions have 5 fields, or 6 with seconds (croniter's syntax), and are evaluated in the
schedule's IANA time zone (default UTC); DST gaps and overlaps follow croniter: a time
that does not exist is shifted forward, a time that occurs twice fires twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._codec import task_name
from .errors import ConfigurationError, InvalidCron
from .job import JobOptions, aware_utc, utcnow

if TYPE_CHECKING:
    from .queue import TaskQueue

__all__ = ["Schedule", "Scheduler", "declared_schedules", "register_schedule"]

log = logging.getLogger("sitq.scheduler")

_declared: dict[str, Schedule] = {}
_declared_lock = threading.Lock()


@dataclass(eq=False)
class Schedule:
    """One cron schedule: run ``func(*args, **kwargs)`` at every tick of ``expression``."""

    name: str
    expression: str
    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    tz: str = "UTC"
    misfire_grace: float = 60.0
    options: JobOptions = field(default_factory=JobOptions)
    #: The default queue of the TaskQueue that declared the schedule: its jobs go there
    #: unless ``options`` (or the task's decorator) name a queue.
    default_queue: str | None = None

    def __post_init__(self) -> None:
        from croniter import croniter  # imported when a schedule is declared

        if not isinstance(self.expression, str) or not croniter.is_valid(self.expression):
            raise InvalidCron(
                f"schedule {self.name!r}: {self.expression!r} is not a valid cron expression; "
                "use 5 fields (minute hour day month weekday, e.g. '*/5 * * * *') or 6 with "
                "seconds last"
            )
        try:
            self.zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigurationError(
                f"schedule {self.name!r}: unknown time zone {self.tz!r}; use an IANA name "
                "such as 'UTC' or 'Europe/Berlin'"
            ) from exc
        if not self.misfire_grace >= 0:
            raise ConfigurationError(f"misfire_grace must be >= 0 seconds, got "
                                     f"{self.misfire_grace!r}")

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (aware), in UTC."""
        local = aware_utc(moment, "moment").astimezone(self.zone)
        from croniter import croniter

        tick: datetime = croniter(self.expression, local).get_next(datetime)
        return tick.astimezone(UTC)

    def ticks_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Ticks in ``(start, end]``, in UTC."""
        out = []
        tick = self.next_after(start)
        while tick <= end:
            out.append(tick)
            tick = self.next_after(tick)
        return out

    def same_as(self, other: Schedule) -> bool:
        return (self.expression, task_name(self.func), self.tz) == (
            other.expression, task_name(other.func), other.tz
        )


def register_schedule(schedule: Schedule) -> Schedule:
    """Add ``schedule`` to the process-wide list that schedulers run."""
    with _declared_lock:
        existing = _declared.get(schedule.name)
        if existing is not None and not existing.same_as(schedule):
            raise ConfigurationError(
                f"two different schedules are named {schedule.name!r}; give one of them "
                "another name= (names identify ticks in the backend)"
            )
        _declared[schedule.name] = schedule
    return schedule


def declared_schedules() -> list[Schedule]:
    with _declared_lock:
        return list(_declared.values())


def forget_schedules() -> None:
    """Drop every declared schedule (for tests)."""
    with _declared_lock:
        _declared.clear()


class Scheduler:
    """Fires due ticks of ``schedules`` through ``queue``.

    ``clock`` is injectable so tests need no patching; :meth:`run_pending` does one pass
    and returns the ids of the jobs it enqueued.

    A tick this scheduler claimed but could not enqueue (the store failed in between) is
    its own to fire, since no other scheduler can claim it: it is retried on later passes
    while it is within ``misfire_grace``, then dropped with an error in the log.
    """

    def __init__(
        self,
        queue: TaskQueue,
        schedules: list[Schedule] | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_sleep: float = 30.0,
    ) -> None:
        self.queue = queue
        self.schedules = schedules if schedules is not None else declared_schedules()
        self.clock = clock
        self.max_sleep = max_sleep
        self._next: dict[str, datetime] = {}
        #: schedule name -> the tick it claimed whose job is not enqueued yet
        self._unsent: dict[str, datetime] = {}
        self.fired: list[tuple[str, datetime, str]] = []

    async def run_pending(self) -> list[str]:
        """One pass over every schedule. A schedule that fails (the store, its arguments)
        does not hold up the others; the first error is raised after the pass."""
        now = self.clock()
        enqueued: list[str] = []
        errors: list[Exception] = []
        for schedule in self.schedules:
            try:
                enqueued += await self._run_schedule(schedule, now)
            except Exception as exc:
                log.warning("schedule %s: could not fire (%s: %s)", schedule.name,
                            type(exc).__name__, exc)
                errors.append(exc)
        if errors:
            raise errors[0]
        return enqueued

    async def _run_schedule(self, schedule: Schedule, now: datetime) -> list[str]:
        enqueued = []
        unsent = self._unsent.get(schedule.name)
        if unsent is not None:
            if (now - unsent).total_seconds() > schedule.misfire_grace:
                del self._unsent[schedule.name]
                log.error("schedule %s: tick %s was claimed but its job could not be "
                          "enqueued within misfire_grace (%ss); it is dropped",
                          schedule.name, unsent.isoformat(), schedule.misfire_grace)
            else:
                enqueued.append(await self._enqueue(schedule, unsent))
        tick = self._due_tick(schedule, now)
        if tick is not None:
            job_id = await self._fire(schedule, tick)
            if job_id is not None:
                enqueued.append(job_id)
        return enqueued

    def _due_tick(self, schedule: Schedule, now: datetime) -> datetime | None:
        """The newest due tick within the misfire grace, if any; advances the schedule."""
        nxt = self._next.get(schedule.name)
        if nxt is None:
            # First pass: a tick missed within the grace window still fires.
            nxt = schedule.next_after(now - timedelta(seconds=schedule.misfire_grace))
        due = []
        while nxt <= now:
            due.append(nxt)
            nxt = schedule.next_after(nxt)
        self._next[schedule.name] = nxt
        if not due:
            return None
        tick: datetime | None = due[-1]
        skipped = due[:-1]
        if (now - due[-1]).total_seconds() > schedule.misfire_grace:
            skipped, tick = due, None
        if skipped:
            log.warning("schedule %s: skipped %d missed tick(s) older than misfire_grace "
                        "(%ss), first %s", schedule.name, len(skipped),
                        schedule.misfire_grace, skipped[0].isoformat())
        return tick

    async def _fire(self, schedule: Schedule, tick: datetime) -> str | None:
        # The tick belongs to the queue its job goes to (purging that queue forgets it).
        queue = self._options(schedule).get("queue") or self.queue.default_queue
        if not await self.queue.backend.claim_tick(schedule.name, tick, queue=queue):
            return None
        # Claimed: this tick is ours alone now, so an enqueue that fails is retried.
        self._unsent[schedule.name] = tick
        return await self._enqueue(schedule, tick)

    @staticmethod
    def _options(schedule: Schedule) -> dict[str, Any]:
        """The job options of ``schedule``'s ticks; ``queue`` set when one applies."""
        options = {
            k: getattr(schedule.options, k)
            for k in schedule.options.__dataclass_fields__
            if getattr(schedule.options, k) is not None
        }
        task_queue = getattr(getattr(schedule.func, "__sitq_options__", None), "queue", None)
        if "queue" not in options:
            options["queue"] = task_queue or schedule.default_queue
        return options

    async def _enqueue(self, schedule: Schedule, tick: datetime) -> str:
        bound = self.queue.options(**self._options(schedule))
        job_id = await bound.enqueue(schedule.func, *schedule.args, **schedule.kwargs)
        self._unsent.pop(schedule.name, None)
        self.fired.append((schedule.name, tick, job_id))
        log.info("schedule %s: tick %s enqueued as %s", schedule.name, tick.isoformat(), job_id)
        return job_id

    def seconds_until_next(self) -> float:
        if not self._next:
            return 0.0
        delta = (min(self._next.values()) - self.clock()).total_seconds()
        return max(0.0, min(delta, self.max_sleep))

    async def run(self, stop: asyncio.Event) -> None:
        """Fire ticks until ``stop`` is set. Backend errors are logged and retried."""
        if not self.schedules:
            log.warning("the scheduler has no schedules: declare them with queue.cron(...) "
                        "or @queue.periodic(...) in the module given to --app")
        while not stop.is_set():
            try:
                await self.run_pending()
                delay = self.seconds_until_next() if self.schedules else self.max_sleep
            except Exception as exc:
                log.warning("scheduler pass failed (%s); retrying in 1s", exc)
                delay = 1.0
            try:
                await asyncio.wait_for(stop.wait(), max(delay, 0.01))
            except TimeoutError:
                pass
