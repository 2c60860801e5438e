"""The producer API (DESIGN §3, §4): enqueue, eta, options, tasks, bulk, results,
cancel, inspect, datetimes and context propagation."""

from __future__ import annotations

import asyncio
import contextvars
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sitq import (
    ConfigurationError,
    ContextVarsPropagator,
    ContextWrapper,
    JobNotFound,
    Result,
    TaskFailed,
    TaskQueue,
)
from sitq._codec import resolve_task
from sitq.config import load_settings
from sitq.serializers import PickleSerializer
from sitq.testing import tasks

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0), value


# --------------------------------------------------------------------- enqueue and eta
async def test_enqueue_returns_time_ordered_ids(queue: TaskQueue) -> None:
    ids = [await queue.enqueue(tasks.add, i, i) for i in range(50)]
    assert all(isinstance(i, str) and i for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 50


async def test_enqueue_runs(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker():
        coro_id = await queue.enqueue(tasks.add, 1, 2)
        sync_id = await queue.enqueue(tasks.multiply, 3, 4)
        kw_id = await queue.enqueue(tasks.echo, 1, key="value")
        results = [await queue.get_result(i, timeout=10) for i in (coro_id, sync_id, kw_id)]
    assert [r.unwrap() for r in results if r is not None] == [
        3, 12, {"args": [1], "kwargs": {"key": "value"}}]


async def test_task_kwargs_never_collide_with_options(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker():
        job_id = await queue.enqueue(tasks.echo, retries=5, queue="x", timeout=1, delay=9,
                                     priority=3, key="k")
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.queue == "default"
    assert result.unwrap()["kwargs"] == {"retries": 5, "queue": "x", "timeout": 1, "delay": 9,
                                         "priority": 3, "key": "k"}


async def test_eta_runs_the_job_later(queue: TaskQueue, run_worker: Any) -> None:
    eta = datetime.now(ZoneInfo("America/New_York")) + timedelta(seconds=0.8)
    async with run_worker():
        job_id = await queue.enqueue(tasks.add, 1, 2, eta=eta)
        info = await queue.inspect(job_id)
        assert info.state == "scheduled"
        assert info.eta == eta and info.eta is not None and info.eta.tzinfo is UTC
        assert await queue.get_result(job_id, timeout=0.3) is None
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.unwrap() == 3
    assert result.started_at is not None and result.started_at >= eta


async def test_eta_in_the_past_runs_now(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker():
        job_id = await queue.enqueue(tasks.add, 1, 2,
                                     eta=datetime.now(UTC) - timedelta(days=1))
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.unwrap() == 3


async def test_default_queue_of_a_task_queue(mem_url: str) -> None:
    async with TaskQueue(mem_url, queue="mine") as q:
        job = await q.backend.get_job(await q.enqueue(tasks.noop))
        assert job is not None and job.queue == "mine"
    with pytest.raises(ConfigurationError, match="queue must be a non-empty string"):
        TaskQueue(mem_url, queue="")


async def test_delay_option(queue: TaskQueue) -> None:
    before = datetime.now(UTC)
    info = await queue.inspect(await queue.options(delay=30).enqueue(tasks.noop))
    assert info.state == "scheduled" and info.eta is not None
    assert timedelta(seconds=29) < info.eta - before < timedelta(seconds=31)


async def test_repeated_enqueues_resolve_delay_and_context_per_call(mem_url: str) -> None:
    """The per-(function, options) recipe is cached, but the delay and the captured
    context belong to each call."""
    ctx = ContextWrapper(ContextVarsPropagator(request_id))
    async with TaskQueue(mem_url, context=ctx) as queue:
        later = queue.options(delay=30)
        token = request_id.set("first")
        try:
            first = await queue.backend.get_job(await later.enqueue(tasks.noop))
        finally:
            request_id.reset(token)
        await asyncio.sleep(0.05)
        second = await queue.backend.get_job(await later.enqueue(tasks.noop))
        assert first is not None and second is not None
        assert first.eta is not None and second.eta is not None
        assert second.eta - first.eta >= timedelta(seconds=0.04)
        assert first.headers == {"cv-request_id": '"first"'} and second.headers == {}


async def test_changing_the_queue_settings_drops_cached_recipes(queue: TaskQueue) -> None:
    first = await queue.backend.get_job(await queue.enqueue(tasks.add, 1, 2))
    queue.serializer = PickleSerializer()
    queue.default_queue = "elsewhere"
    second = await queue.backend.get_job(await queue.enqueue(tasks.add, 1, 2))
    assert first is not None and second is not None
    assert (first.serializer, first.queue) == ("cloudpickle", "default")
    assert (second.serializer, second.queue) == ("pickle", "elsewhere")


def test_job_builder_matches_the_keyword_form() -> None:
    """job_builder maps names to fields whatever their order, fills the defaults of the
    fields it is not given (default factories called per job), and refuses unknown or
    missing required fields."""
    import dataclasses

    from sitq.job import Job, job_builder

    values: dict[str, Any] = dict(id="i", queue="q", task="t", payload=b"p", serializer="s",
                  headers={"h": "v"}, priority=3, eta=datetime(2030, 1, 1, tzinfo=UTC),
                  max_retries=2, timeout=1.5, key="k", result_ttl=60.0, state="running",
                  worker="w", cancel_requested=True)
    names = sorted(values, reverse=True)  # not the field order
    made = job_builder(*names)(*[values[n] for n in names])
    expected = Job(**values)
    assert made.created_at - expected.created_at < timedelta(seconds=1)
    made.created_at = expected.created_at
    assert made == expected
    few = job_builder("serializer", "payload", "task", "queue", "id", "chain")
    one, two = few("s", b"p", "t", "q", "i", b"c"), few("s", b"p", "t", "q", "i", None)
    assert dataclasses.asdict(one) | {"created_at": None} == dataclasses.asdict(
        Job(id="i", queue="q", task="t", payload=b"p", serializer="s", chain=b"c")
    ) | {"created_at": None}
    assert one.headers == {} and one.headers is not two.headers
    with pytest.raises(ValueError, match="nope"):
        job_builder("id", "queue", "task", "payload", "serializer", "nope")
    with pytest.raises(ValueError, match="'payload'"):
        job_builder("id", "queue", "task", "serializer", "chain")


def test_job_ids_after_fork_share_no_random_digits() -> None:
    import os

    from sitq.job import new_job_id

    new_job_id()  # the parent has random digits in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send one id and leave at once
        os.write(write, new_job_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = new_job_id()
    assert len(child) == len(parent) == 32
    assert child[18:] != parent[18:]


# --------------------------------------------------------------------- options
async def test_options_is_a_bound_view(queue: TaskQueue) -> None:
    high = queue.options(queue="high", priority=5)
    urgent = high.options(retries=2)
    a = await high.enqueue(tasks.noop)
    b = await urgent.enqueue(tasks.noop)
    c = await queue.enqueue(tasks.noop)
    jobs = [await queue.backend.get_job(i) for i in (a, b, c)]
    assert [(j.queue, j.priority, j.max_retries) for j in jobs if j] == [
        ("high", 5, 0), ("high", 5, 2), ("default", 0, 0)]


async def test_all_options_reach_the_job(queue: TaskQueue) -> None:
    job_id = await queue.options(queue="q1", retries=3, timeout=2.5, priority=-1, key="k1",
                                 serializer="msgpack", result_ttl=60).enqueue(tasks.add, 1, 2)
    job = await queue.backend.get_job(job_id)
    assert job is not None
    assert (job.queue, job.max_retries, job.timeout, job.priority, job.key, job.serializer,
            job.result_ttl) == ("q1", 3, 2.5, -1, "k1", "msgpack", 60)


async def test_delay_and_eta_conflict(queue: TaskQueue) -> None:
    eta = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(ConfigurationError, match=r"either delay= \(seconds\) or eta="):
        queue.options(delay=10, eta=eta)
    with pytest.raises(ConfigurationError, match="not both"):
        await queue.options(delay=10).enqueue(tasks.noop, eta=eta)
    with pytest.raises(ConfigurationError, match="not both"):
        queue.options(eta=eta).options(delay=1)
    assert await queue.stats() == {}


def test_unknown_option_names(mem_url: str) -> None:
    queue = TaskQueue(mem_url)
    with pytest.raises(ConfigurationError) as info:
        queue.options(retry=3)
    message = str(info.value)
    assert "unknown job option(s) retry" in message
    assert "did you mean 'retries'?" in message
    assert "valid options are: connection, delay, eta, key, priority, queue, result_ttl, " \
           "retries, serializer, timeout" in message
    with pytest.raises(ConfigurationError, match="unknown job option"):
        queue.task(tiemout=3)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"retries": -1}, "retries must be an int >= 0"),
        ({"retries": 1.5}, "retries must be an int >= 0"),
        ({"retries": True}, "retries must be an int >= 0, got True"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": "30"}, "timeout must be a number of seconds > 0"),
        ({"timeout": False}, "timeout must be a number of seconds > 0"),
        ({"delay": -1}, "delay must be a number of seconds >= 0"),
        ({"delay": "soon"}, "delay must be a number of seconds >= 0"),
        ({"priority": "high"}, "priority must be an int"),
        ({"priority": 1.5}, "priority must be an int"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"queue": 5}, "queue must be a non-empty string"),
        ({"key": ""}, "key must be a non-empty string"),
        ({"result_ttl": 0}, "result_ttl must be a number of seconds > 0"),
        ({"result_ttl": "1d"}, "result_ttl must be a number of seconds > 0"),
        ({"serializer": 5}, "serializer must be a serializer name"),
        ({"eta": 1700000000}, "eta must be a datetime"),
    ],
)
def test_bad_option_values(mem_url: str, options: dict[str, Any], expected: str) -> None:
    queue = TaskQueue(mem_url)
    with pytest.raises(ConfigurationError) as info:
        queue.options(**options)
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------- decorated tasks
# Built at import time, so it must not read the developer's SITQ_* environment.
deco_queue = TaskQueue("memory://api-deco",
                       settings=load_settings({"backend": "memory://api-deco"}, env={},
                                              pyproject=False))


@deco_queue.task(retries=2, queue="deco", priority=4)
def deco_multiply(a: int, b: int) -> int:
    return a * b


@deco_queue.task
async def deco_add(a: int, b: int) -> int:
    return a + b


async def test_task_plain_call_runs_locally() -> None:
    await deco_queue.purge()
    assert deco_multiply(3, 4) == 12
    assert await deco_add(1, 2) == 3
    assert deco_multiply.__name__ == "deco_multiply"
    assert await deco_queue.stats() == {}, "calling the task must not enqueue it"


async def test_task_enqueue_applies_its_options(run_worker: Any) -> None:
    await deco_queue.purge()
    job_id = await deco_multiply.enqueue(6, 7)
    job = await deco_queue.backend.get_job(job_id)
    assert job is not None
    assert (job.queue, job.max_retries, job.priority) == ("deco", 2, 4)
    override = await deco_multiply.options(queue="other", retries=0).enqueue(1, 1)
    job2 = await deco_queue.backend.get_job(override)
    assert job2 is not None and (job2.queue, job2.max_retries, job2.priority) == ("other", 0, 4)
    # Enqueued through the queue, the decorator's options still apply.
    via_queue = await deco_queue.enqueue(deco_multiply, 2, 2)
    job3 = await deco_queue.backend.get_job(via_queue)
    assert job3 is not None and (job3.queue, job3.max_retries) == ("deco", 2)
    via_options = await deco_queue.options(priority=9).enqueue(deco_multiply, 2, 2)
    job4 = await deco_queue.backend.get_job(via_options)
    assert job4 is not None and (job4.queue, job4.priority) == ("deco", 9)
    async with run_worker("memory://api-deco", queues=["deco", "default"]):
        result = await deco_queue.get_result(job_id, timeout=10)
        added = await deco_queue.get_result(await deco_add.enqueue(2, 3), timeout=10)
    assert result is not None and result.unwrap() == 42
    assert added is not None and added.unwrap() == 5
    await deco_queue.purge()


async def test_task_is_sent_by_reference_and_resolves_undecorated() -> None:
    job_id = await deco_multiply.enqueue(1, 2)
    job = await deco_queue.backend.get_job(job_id)
    assert job is not None and job.task.endswith(":deco_multiply")
    target = PickleSerializer().loads(job.payload)[1]  # [version, target, args, kwargs]
    assert isinstance(target, str), "a module-level task travels by reference"
    assert resolve_task(target) is deco_multiply.__sitq_func__
    await deco_queue.purge()


async def test_task_enqueue_takes_eta() -> None:
    eta = datetime.now(UTC) + timedelta(hours=1)
    info = await deco_queue.inspect(await deco_multiply.enqueue(1, 2, eta=eta))
    assert info.state == "scheduled" and info.eta == eta
    await deco_queue.purge()


# --------------------------------------------------------------------- bulk
async def test_enqueue_many_tuples_and_dicts(queue: TaskQueue, run_worker: Any) -> None:
    ids = await queue.enqueue_many(tasks.add, [(1, 2), [3, 4], {"a": 5, "b": 6}])
    assert len(ids) == len(set(ids)) == 3
    async with run_worker():
        results = [await queue.get_result(i, timeout=10) for i in ids]
    assert [r.unwrap() for r in results if r] == [3, 7, 11]


async def test_enqueue_many_generator_options_and_chunks(queue: TaskQueue) -> None:
    calls: list[int] = []
    original = queue.backend.enqueue_many

    async def counting(jobs: Any) -> list[str]:
        calls.append(len(jobs))
        return await original(jobs)

    queue.backend.enqueue_many = counting  # type: ignore[method-assign]
    ids = await queue.options(queue="bulk").enqueue_many(tasks.add, ((i, i) for i in range(2500)))
    assert len(ids) == 2500 and calls == [1000, 1000, 500]
    assert (await queue.stats())["bulk"].queued == 2500


async def test_enqueue_many_bad_item(queue: TaskQueue) -> None:
    with pytest.raises(ConfigurationError, match=r"wrap a single argument as \(value,\)"):
        await queue.enqueue_many(tasks.add, [(1, 2), 5])  # type: ignore[list-item]
    assert await queue.stats() == {}


async def test_batch(queue: TaskQueue, run_worker: Any) -> None:
    async with queue.batch() as batch:
        a = batch.enqueue(tasks.add, 1, 2)
        b = batch.enqueue(tasks.multiply, 3, 4)
        c = batch.options(queue="other").enqueue(tasks.echo, x=1)
        assert await queue.stats() == {}, "nothing is sent before the block ends"
    assert batch.ids == [a, b, c]
    assert (await queue.stats())["default"].queued == 2
    async with run_worker(queues=["default", "other"]):
        values = [(await queue.get_result(i, timeout=10)) for i in (a, b, c)]
    assert [v.unwrap() for v in values if v] == [3, 12, {"args": [], "kwargs": {"x": 1}}]


async def test_batch_takes_eta_like_enqueue(queue: TaskQueue) -> None:
    eta = datetime.now(UTC) + timedelta(hours=1)
    async with queue.batch() as batch:
        later = batch.enqueue(tasks.echo, 1, eta=eta)
        other = batch.options(queue="o").enqueue(tasks.echo, 2, eta=eta)
    for job_id in (later, other):
        info = await queue.inspect(job_id)
        assert info.state == "scheduled" and info.eta == eta
        job = await queue.backend.get_job(job_id)
        assert job is not None
        assert PickleSerializer().loads(job.payload)[3] == {}, "eta is not a task argument"


async def test_batch_discarded_on_error(queue: TaskQueue) -> None:
    with pytest.raises(RuntimeError):
        async with queue.batch() as batch:
            batch.enqueue(tasks.add, 1, 2)
            raise RuntimeError("abort")
    assert await queue.stats() == {}


# --------------------------------------------------------------------- results
async def test_get_result_timeout_semantics(queue: TaskQueue, run_worker: Any) -> None:
    job_id = await queue.enqueue(tasks.sleep, 0.5)
    started = time.monotonic()
    assert await queue.get_result(job_id) is None  # default: look once
    assert await queue.get_result(job_id, timeout=0) is None
    assert time.monotonic() - started < 0.2
    started = time.monotonic()
    assert await queue.get_result(job_id, timeout=0.3) is None
    assert 0.25 <= time.monotonic() - started < 2
    with pytest.raises(JobNotFound, match="no job with id 'no-such-job' in memory://"):
        await queue.get_result("no-such-job", timeout=None)  # unknown: raised at once
    async with run_worker():
        started = time.monotonic()
        result = await queue.get_result(job_id, timeout=None)  # no limit
        assert result is not None and result.unwrap() == 0.5
        assert time.monotonic() - started < 5
        # Finished results come back at once, whatever the timeout.
        assert (await queue.get_result(job_id, timeout=0)) == result


async def test_unwrap_raises_task_failed_with_remote_traceback(queue: TaskQueue,
                                                               run_worker: Any) -> None:
    async with run_worker():
        result = await queue.get_result(await queue.enqueue(tasks.fail, "kaput"), timeout=10)
    assert result is not None and result.status == "failed" and not result.ok
    assert result.error is not None
    assert (result.error.type, result.error.message, result.error.module) == (
        "ValueError", "kaput", "builtins")
    assert str(result.error) == "ValueError: kaput"
    with pytest.raises(TaskFailed) as info:
        result.unwrap()
    exc = info.value
    assert exc.result is result and exc.error == result.error
    assert "Traceback (most recent call last)" in exc.remote_traceback
    assert "raise ValueError(message)" in exc.remote_traceback
    assert "tasks.py" in exc.remote_traceback
    assert "ValueError: kaput" in str(exc) and "Remote traceback:" in str(exc)


async def test_unwrap_of_a_pending_result() -> None:
    with pytest.raises(TaskFailed, match="has not finished"):
        Result(id="x", status="pending").unwrap()


# --------------------------------------------------------------------- cancel
async def test_cancel_a_queued_job(queue: TaskQueue, run_worker: Any, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job_id = await queue.options(delay=0.3).enqueue(tasks.record, str(log), "ran")
    assert await queue.cancel(job_id) is True
    result = await queue.get_result(job_id)
    assert result is not None and result.status == "failed"
    assert result.error is not None and result.error.type == "Cancelled"
    assert result.task == "sitq.testing.tasks:record" and result.queue == "default"
    assert_utc(result.enqueued_at)
    assert_utc(result.finished_at)
    info = await queue.inspect(job_id)
    assert info.state == "failed" and info.task == "sitq.testing.tasks:record"
    async with run_worker():
        await asyncio.sleep(0.6)
        assert await queue.get_result(await queue.enqueue(tasks.noop), timeout=10) is not None
    assert not log.exists(), "a cancelled job must never run"
    assert await queue.cancel(job_id) is False, "already finished"
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        await queue.cancel("nope")


@pytest.mark.parametrize("func", [tasks.sleep, tasks.sleep_sync])
async def test_cancel_a_running_job(queue: TaskQueue, run_worker: Any, func: Any) -> None:
    async with run_worker(lease=0.6):
        job_id = await queue.enqueue(func, 1.5 if func is tasks.sleep_sync else 30)
        await wait_for_state(queue, job_id, "running")
        started = time.monotonic()
        assert await queue.cancel(job_id) is True
        result = await queue.get_result(job_id, timeout=10)
        assert time.monotonic() - started < 1.2, "stopped at the next heartbeat"
        good = await queue.get_result(await queue.enqueue(tasks.add, 1, 1), timeout=10)
    assert result is not None and result.status == "failed"
    assert result.error is not None and result.error.type == "Cancelled"
    assert "cancelled while running" in result.error.message
    assert result.attempts == 1
    assert good is not None and good.unwrap() == 2


async def wait_for_state(queue: TaskQueue, job_id: str, state: str, limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while (await queue.inspect(job_id)).state != state:
        assert time.monotonic() < deadline, f"job never reached {state!r}"
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------- inspect and datetimes
async def test_inspect_states_and_utc_datetimes(queue: TaskQueue, run_worker: Any) -> None:
    queued = await queue.enqueue(tasks.add, 1, 2)
    scheduled = await queue.enqueue(tasks.add, 1, 2,
                                    eta=datetime.now(UTC) + timedelta(hours=1))
    info = await queue.inspect(queued)
    assert (info.state, info.task, info.queue, info.attempts) == (
        "queued", "sitq.testing.tasks:add", "default", 0)
    assert info.result is None and info.lease_until is None
    assert_utc(info.created_at)
    sched = await queue.inspect(scheduled)
    assert sched.state == "scheduled"
    assert_utc(sched.eta)
    async with run_worker(lease=5) as worker:
        assert (await queue.get_result(queued, timeout=10)) is not None
        running = await queue.enqueue(tasks.sleep, 30)
        failing = await queue.enqueue(tasks.fail)
        await wait_for_state(queue, running, "running")
        run = await queue.inspect(running)
        assert run.attempts == 1 and run.worker == worker.id
        assert_utc(run.lease_until)
        assert_utc(run.created_at)
        assert (await queue.get_result(failing, timeout=10)) is not None
        await queue.cancel(running)
    done = await queue.inspect(queued)
    assert done.state == "success" and done.attempts == 1 and done.worker == worker.id
    assert done.result is not None and done.result.value == 3
    for value in (done.created_at, done.result.enqueued_at, done.result.started_at,
                  done.result.finished_at):
        assert_utc(value)
    failed = await queue.inspect(failing)
    assert failed.state == "failed" and failed.result is not None
    assert failed.result.error is not None and failed.result.error.type == "ValueError"
    with pytest.raises(JobNotFound, match="no job with id 'unknown'"):
        await queue.inspect("unknown")
    assert isinstance(JobNotFound("x"), LookupError)


async def test_stats(queue: TaskQueue) -> None:
    await queue.enqueue_many(tasks.noop, [(), ()])
    await queue.options(delay=60).enqueue(tasks.noop)
    stats = await queue.stats()
    assert stats["default"].as_dict() == {"queued": 2, "scheduled": 1, "running": 0, "failed": 0}
    assert await queue.purge() == 3
    assert (await queue.stats(["default"]))["default"].queued == 0


# --------------------------------------------------------------------- context propagation
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def read_request_id() -> str:
    return request_id.get("unset")


def read_request_id_in_thread() -> str:
    return request_id.get("unset")


async def test_context_propagation(mem_url: str, run_worker: Any) -> None:
    ctx = ContextWrapper(ContextVarsPropagator(request_id))
    async with TaskQueue(mem_url, context=ctx) as queue:
        token = request_id.set("req-42")
        try:
            coro_id = await queue.enqueue(read_request_id)
            thread_id = await queue.enqueue(read_request_id_in_thread)
        finally:
            request_id.reset(token)
        bare_id = await queue.enqueue(read_request_id)  # no value captured
        job = await queue.backend.get_job(coro_id)
        assert job is not None and job.headers == {"cv-request_id": '"req-42"'}
        async with run_worker(context=ctx, concurrency=1):
            values = [await queue.get_result(i, timeout=10) for i in
                      (coro_id, thread_id, bare_id)]
        async with run_worker():  # a worker without the propagator ignores the header
            plain = await queue.get_result(await queue.enqueue(read_request_id), timeout=10)
    assert [v.unwrap() for v in values if v] == ["req-42", "req-42", "unset"]
    assert plain is not None and plain.unwrap() == "unset"


# --------------------------------------------------------------------- idempotency and waiting
async def test_idempotency_key(queue: TaskQueue, run_worker: Any) -> None:
    keyed = queue.options(key="invoice-42")
    first = await keyed.enqueue(tasks.sleep, 0.3)
    assert await keyed.enqueue(tasks.sleep, 0.3) == first
    other = await queue.options(key="invoice-42", queue="other").enqueue(tasks.noop)
    assert other != first, "a key is scoped to its queue"
    async with run_worker():
        await wait_for_state(queue, first, "running")
        assert await keyed.enqueue(tasks.sleep, 0.3) == first, "still running"
        assert await queue.get_result(first, timeout=10) is not None
        again = await keyed.enqueue(tasks.add, 1, 2)
        assert again != first, "a finished job frees its key"
        assert await queue.cancel(again) in (True, False)
    third = await keyed.enqueue(tasks.noop)
    assert third not in (first, again)


async def test_many_waiters_on_one_result(queue: TaskQueue, run_worker: Any) -> None:
    job_id = await queue.enqueue(tasks.sleep, 0.3)
    async with run_worker():
        results = await asyncio.gather(*(queue.get_result(job_id, timeout=10)
                                         for _ in range(50)))
    assert all(r is not None and r.value == 0.3 for r in results)
