"""Cron schedules: declaration errors, ticks, misfires, DST, and exactly-once firing."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from sitq import BackendUnavailable, InvalidCron, SerializationError, TaskQueue, Worker
from sitq.backends.memory import MemoryBackend
from sitq.errors import ConfigurationError
from sitq.job import Job, JobOptions
from sitq.scheduling import Schedule, Scheduler, declared_schedules, forget_schedules
from sitq.testing import tasks

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(autouse=True)
def _clean_schedules() -> Iterator[None]:
    forget_schedules()
    yield
    forget_schedules()


@pytest.fixture
def url() -> str:
    return f"memory://sched-{uuid.uuid4().hex[:8]}"


def test_invalid_cron_is_a_clear_value_error() -> None:
    queue = TaskQueue("memory://")
    with pytest.raises(InvalidCron, match="not a valid cron expression") as info:
        queue.cron("61 * * * *", tasks.noop)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ConfigurationError, match="unknown time zone 'Mars/Olympus'"):
        queue.cron("* * * * *", tasks.noop, tz="Mars/Olympus")


def test_declarations_are_registered_once_by_name() -> None:
    queue = TaskQueue("memory://")
    queue.cron("*/5 * * * *", tasks.add, 1, 2, name="adder")
    queue.cron("*/5 * * * *", tasks.add, 1, 2, name="adder")  # re-import: same schedule

    @queue.options(queue="reports").periodic("0 9 * * *", tz="Europe/Berlin")
    def morning() -> None: ...

    names = sorted(s.name for s in declared_schedules())
    assert names == ["adder", f"{__name__}:test_declarations_are_registered_once_by_name"
                     ".<locals>.morning"]
    with pytest.raises(ConfigurationError, match="two different schedules are named 'adder'"):
        queue.cron("0 * * * *", tasks.add, 1, 2, name="adder")


async def test_ticks_fire_on_time_and_once(url: str) -> None:
    clock = Clock(datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC))
    async with TaskQueue(url) as queue:
        schedule = queue.cron("*/5 * * * *", tasks.add, 1, 2, name="every5")
        first = Scheduler(queue, [schedule], clock=clock)
        second = Scheduler(queue, [schedule], clock=clock)
        # 12:00 was missed by 30 s (< misfire_grace): it fires once, whoever runs first.
        fired = await first.run_pending() + await second.run_pending()
        assert len(fired) == 1
        clock.now = datetime(2026, 5, 1, 12, 4, 59, tzinfo=UTC)
        assert await first.run_pending() == []
        clock.now = datetime(2026, 5, 1, 12, 5, 0, tzinfo=UTC)
        fired = await second.run_pending() + await first.run_pending()
        assert len(fired) == 1
        assert (await queue.stats())["default"].queued == 2
        assert [t for _, t, _ in first.fired + second.fired] == [
            datetime(2026, 5, 1, 12, 0, tzinfo=UTC), datetime(2026, 5, 1, 12, 5, tzinfo=UTC)]


async def test_missed_ticks_beyond_grace_are_skipped_and_logged(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC))
    async with TaskQueue(url) as queue:
        schedule = queue.cron("*/5 * * * *", tasks.noop, name="m")
        scheduler = Scheduler(queue, [schedule], clock=clock)
        assert len(await scheduler.run_pending()) == 1  # 12:00
        clock.now = datetime(2026, 5, 1, 12, 20, 10, tzinfo=UTC)  # down for 20 minutes
        with caplog.at_level(logging.WARNING, logger="sitq.scheduler"):
            assert len(await scheduler.run_pending()) == 1  # only 12:20, 10 s late
        assert "skipped 3 missed tick(s)" in caplog.text
        clock.now = datetime(2026, 5, 1, 12, 26, 30, tzinfo=UTC)  # 12:25 is 90 s late
        assert await scheduler.run_pending() == []
        assert [t.minute for _, t, _ in scheduler.fired] == [0, 20]


def test_dst_follows_croniter() -> None:
    daily = Schedule("d", "30 2 * * *", tasks.noop, tz="Europe/Berlin")
    # Spring forward (2026-03-29): 02:30 does not exist, the tick moves to 03:00 CEST.
    spring = daily.ticks_between(datetime(2026, 3, 28, 12, tzinfo=UTC),
                                 datetime(2026, 3, 30, 12, tzinfo=UTC))
    assert spring == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
                      datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]
    # Fall back (2026-10-25): 02:30 happens twice, and croniter fires both.
    autumn = daily.ticks_between(datetime(2026, 10, 24, 12, tzinfo=UTC),
                                 datetime(2026, 10, 25, 12, tzinfo=UTC))
    assert autumn == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
                      datetime(2026, 10, 25, 1, 30, tzinfo=UTC)]
    # Every tick returned is aware UTC, in the same tzinfo as every other sitq datetime.
    assert all(t.tzinfo is UTC for t in spring + autumn)


async def test_schedulers_in_two_workers_fire_each_tick_once(url: str) -> None:
    async with TaskQueue(url) as queue:
        queue.cron("* * * * * *", tasks.noop, name="every-second")  # 6 fields: seconds
        workers = [Worker(url, scheduler=True, handle_signals=False) for _ in range(2)]
        async with workers[0], workers[1]:
            await asyncio.sleep(3.2)
        ran = workers[0].counters.succeeded + workers[1].counters.succeeded
        ticks = [t for w in workers for _, t, _ in w.scheduler_runner.fired]
    assert ran >= 2
    assert len(ticks) == len(set(ticks)) >= ran


class _EnqueueFailsOnce(MemoryBackend):
    """A store that blips once: the tick claim succeeds, the enqueue right after fails."""

    failures = 1

    async def _enqueue(self, jobs: list[Job]) -> list[str]:
        if self.failures:
            self.failures -= 1
            raise BackendUnavailable("connection reset")
        return await super()._enqueue(jobs)


async def test_a_tick_whose_enqueue_fails_is_retried_not_lost(url: str) -> None:
    """The scheduler won the tick's claim, so no other scheduler will fire it: if the
    enqueue then fails (a store blip), this scheduler must retry it on its next pass."""
    clock = Clock(datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC))
    backend = _EnqueueFailsOnce(url.split("://", 1)[1])
    queue = TaskQueue(backend)
    schedule = queue.cron("*/5 * * * *", tasks.noop, name="blip")
    scheduler = Scheduler(queue, [schedule], clock=clock)
    with pytest.raises(BackendUnavailable):
        await scheduler.run_pending()
    clock.now = datetime(2026, 5, 1, 12, 0, 2, tzinfo=UTC)  # the next pass, 1 s later
    assert len(await scheduler.run_pending()) == 1
    assert (await queue.stats())["default"].queued == 1
    assert [t for _, t, _ in scheduler.fired] == [datetime(2026, 5, 1, 12, 0, tzinfo=UTC)]


async def test_one_failing_schedule_does_not_hold_up_the_others(url: str) -> None:
    clock = Clock(datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC))
    async with TaskQueue(url) as queue:
        broken = Schedule("broken", "* * * * *", tasks.echo, (threading.Lock(),),
                          options=JobOptions(serializer="json"))
        fine = queue.cron("* * * * *", tasks.noop, name="fine")
        scheduler = Scheduler(queue, [broken, fine], clock=clock)
        with pytest.raises(SerializationError):
            await scheduler.run_pending()
        assert [name for name, _, _ in scheduler.fired] == ["fine"]


async def test_a_schedule_fires_into_the_default_queue_of_the_queue_that_declared_it(
    url: str,
) -> None:
    clock = Clock(datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC))
    reports = TaskQueue(url, queue="reports")  # its jobs go to "reports" unless told otherwise
    schedule = reports.cron("*/5 * * * *", tasks.noop, name="to-reports")
    async with TaskQueue(url) as scheduler_queue:  # what a worker's scheduler uses
        [job_id] = await Scheduler(scheduler_queue, [schedule], clock=clock).run_pending()
        assert (await scheduler_queue.inspect(job_id)).queue == "reports"


async def test_a_scheduled_task_keeps_the_queue_of_its_decorator(url: str) -> None:
    clock = Clock(datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC))
    reports = TaskQueue(url, queue="reports")
    billing_task = reports.task(queue="billing")(tasks.noop)
    schedule = reports.cron("*/5 * * * *", billing_task, name="billing")
    schedule.default_queue = "reports"  # as the declaring queue records it
    async with TaskQueue(url) as scheduler_queue:
        [job_id] = await Scheduler(scheduler_queue, [schedule], clock=clock).run_pending()
        assert (await scheduler_queue.inspect(job_id)).queue == "billing"
