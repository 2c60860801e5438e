"""DESIGN §9: bad input gets an error that says what was wrong and what to do, a job that
cannot run ends ``failed`` with that error stored, and the worker keeps running."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest

from sitq import (
    ConfigurationError,
    InvalidDatetime,
    Job,
    NotInstalled,
    PayloadTooLarge,
    Result,
    SerializationError,
    SitqError,
    SyncTaskQueue,
    TaskQueue,
    Worker,
)
from sitq._codec import call_encoder
from sitq.job import new_job_id
from sitq.plugins import Registry, get_registry
from sitq.serializers import Signer
from sitq.testing import tasks

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def write_job(queue: TaskQueue, payload: Any, serializer: str, **fields: Any) -> str:
    """Put a job record straight into the store, bypassing every producer-side check."""
    job = Job(id=new_job_id(), queue="default", task=fields.pop("task", "broken:job"),
              payload=payload, serializer=serializer, **fields)
    return await queue.backend.enqueue(job)


async def failed_result(queue: TaskQueue, job_id: str) -> Result[Any]:
    result = await queue.get_result(job_id, timeout=10)
    assert result is not None, "the bad job never finished"
    assert result.status == "failed", result
    assert result.error is not None
    return result


async def assert_worker_alive(queue: TaskQueue) -> None:
    """A good job enqueued after the bad one still succeeds."""
    job_id = await queue.enqueue(tasks.add, 20, 22)
    result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.unwrap() == 42


# --------------------------------------------------------------------- malformed payloads
@pytest.mark.parametrize("serializer", ["cloudpickle", "pickle", "json", "msgpack"])
async def test_malformed_payload_fails_the_job(queue: TaskQueue, run_worker: Any,
                                               serializer: str) -> None:
    async with run_worker() as worker:
        job_id = await write_job(queue, b"\x00\xc1 not a payload \xff", serializer,
                                 max_retries=3)
        result = await failed_result(queue, job_id)
        await assert_worker_alive(queue)
    assert result.error is not None and result.error.type == "SerializationError"
    assert "could not be deserialized" in result.error.message
    assert "malformed or truncated" in result.error.message
    assert result.attempts == 1, "a payload that cannot be read must not be retried"
    assert worker.counters.retried == 0


@pytest.mark.parametrize("serializer", ["cloudpickle", "json", "msgpack"])
async def test_truncated_payload_fails_the_job(queue: TaskQueue, run_worker: Any,
                                               serializer: str) -> None:
    registry = get_registry()
    _, encode = call_encoder(tasks.echo, registry.serializer(serializer), Signer(), 1 << 20)
    payload = encode(("x" * 100,), {"k": 1})
    async with run_worker():
        job_id = await write_job(queue, payload[: len(payload) // 2], serializer)
        result = await failed_result(queue, job_id)
        await assert_worker_alive(queue)
    assert result.error is not None and result.error.type == "SerializationError"
    assert "truncated" in result.error.message


@pytest.mark.parametrize("body", [b'{"a": 1}', b"[1, 2]", b'["sitq.testing.tasks:add", 1, {}]',
                                  b'[42, [], {}]'])
async def test_payload_that_is_not_a_sitq_call(queue: TaskQueue, run_worker: Any,
                                               body: bytes) -> None:
    async with run_worker():
        result = await failed_result(queue, await write_job(queue, body, "json"))
        await assert_worker_alive(queue)
    assert result.error is not None and result.error.type == "SerializationError"
    assert "payload" in result.error.message


async def test_payload_of_the_wrong_type(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker():
        result = await failed_result(queue, await write_job(queue, "a str, not bytes", "json"))
        await assert_worker_alive(queue)
    assert result.error is not None and result.error.type == "SerializationError"
    assert "must be bytes" in result.error.message


async def test_job_naming_an_unknown_serializer(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker():
        result = await failed_result(queue, await write_job(queue, b"[]", "yaml"))
        await assert_worker_alive(queue)
    assert result.error is not None and result.error.type == "SerializationError"
    assert "'yaml'" in result.error.message and "not installed" in result.error.message


# --------------------------------------------------------------------- signatures
async def test_wrong_signature_is_refused(mem_url: str, run_worker: Any) -> None:
    async with TaskQueue(mem_url, secret_key="alpha") as producer, \
            TaskQueue(mem_url, secret_key="beta") as reader, run_worker(secret_key="beta"):
        job_id = await producer.enqueue(tasks.add, 1, 2)
        result = await failed_result(reader, job_id)
        await assert_worker_alive(reader)
    assert result.error is not None and result.error.type == "SignatureError"
    assert "wrong signature" in result.error.message
    assert "SITQ_SECRET_KEY" in result.error.message
    # A client without the worker's key cannot read the (signed) result either.
    with pytest.raises(SitqError, match="wrong signature"):
        await producer.get_result(job_id)


async def test_unsigned_payload_is_refused_when_a_key_is_set(mem_url: str, run_worker: Any,
                                                             queue: TaskQueue) -> None:
    async with TaskQueue(mem_url, secret_key="k1") as keyed, run_worker(secret_key="k1"):
        job_id = await queue.enqueue(tasks.add, 1, 2)  # the unsigned producer
        result = await failed_result(keyed, job_id)
        await assert_worker_alive(keyed)
    assert result.error is not None and result.error.type == "SignatureError"
    assert "unsigned" in result.error.message
    assert "SITQ_SECRET_KEY" in result.error.message


async def test_signed_payload_to_a_worker_without_key(mem_url: str, run_worker: Any,
                                                      queue: TaskQueue) -> None:
    async with TaskQueue(mem_url, secret_key="k1") as keyed, run_worker():
        job_id = await keyed.enqueue(tasks.add, 1, 2)
        result = await failed_result(queue, job_id)
        await assert_worker_alive(queue)
    assert result.error is not None and result.error.type == "SignatureError"
    assert "signed but no secret key is configured" in result.error.message
    assert "SITQ_SECRET_KEY" in result.error.message
    # The keyed client refuses the worker's unsigned result, and says why.
    with pytest.raises(SitqError, match="unsigned result") as info:
        await keyed.get_result(job_id)
    assert "worker" in str(info.value)


async def test_key_rotation(mem_url: str, run_worker: Any,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The first key signs, every key verifies: rotate by putting the new key first."""
    old_producer = TaskQueue(mem_url, secret_key="old-key")
    monkeypatch.setenv("SITQ_SECRET_KEY", "new-key,old-key")
    rotated = TaskQueue(mem_url)  # from the environment
    assert rotated.settings.secret_key == ["new-key", "old-key"]
    async with run_worker():  # also configured from SITQ_SECRET_KEY
        old_id = await old_producer.enqueue(tasks.add, 1, 1)
        new_id = await rotated.enqueue(tasks.add, 2, 2)
        old_result = await rotated.get_result(old_id, timeout=10)
        new_result = await rotated.get_result(new_id, timeout=10)
    assert old_result is not None and old_result.unwrap() == 2
    assert new_result is not None and new_result.unwrap() == 4
    # New payloads are signed with the new key only.
    job = await rotated.backend.get_job(await rotated.options(delay=60).enqueue(tasks.noop))
    assert job is not None
    Signer("new-key").verify(job.payload)
    with pytest.raises(SitqError, match="wrong signature"):
        Signer("old-key").verify(job.payload)
    # Results are signed with the new key: a worker-side key of only "new-key" is enough.
    assert Signer("new-key").verify(await rotated.backend.get_result(new_id) or b"")


# --------------------------------------------------------------------- task references
@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("no_such_module_xyz:func", "cannot import module 'no_such_module_xyz'"),
        ("sitq.testing.tasks:no_such_function", "has no attribute 'no_such_function'"),
        ("sitq.testing.tasks:add.nested", "has no attribute 'add.nested'"),
        ("not-a-reference", "is not of the form 'module:function'"),
        (".relative:func", "cannot import module '.relative'"),
        ("sitq.testing:tasks", "not a callable"),
    ],
)
async def test_unknown_task_reference(queue: TaskQueue, run_worker: Any, reference: str,
                                      expected: str) -> None:
    async with run_worker():
        job_id = await write_job(queue, json.dumps([reference, [], {}]).encode(), "json",
                                 task=reference, max_retries=2)
        result = await failed_result(queue, job_id)
        await assert_worker_alive(queue)
    assert result.error is not None and result.error.type == "TaskNotFound"
    assert expected in result.error.message
    assert result.attempts == 1


async def test_task_module_that_fails_to_import(queue: TaskQueue, run_worker: Any,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sitq_broken_tasks_mod.py").write_text(textwrap.dedent("""
        raise RuntimeError("this module is broken")
        def job(): ...
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sitq_broken_tasks_mod", raising=False)
    async with run_worker():
        body = msgpack.packb(["sitq_broken_tasks_mod:job", [], {}])
        result = await failed_result(queue, await write_job(queue, body, "msgpack"))
        await assert_worker_alive(queue)
    assert result.error is not None and result.error.type == "TaskNotFound"
    assert "RuntimeError: this module is broken" in result.error.message


# --------------------------------------------------------------------- arguments and results
async def test_unpicklable_arguments_fail_at_enqueue(queue: TaskQueue) -> None:
    with pytest.raises(SerializationError) as info:
        await queue.enqueue(tasks.echo, threading.Lock())
    message = str(info.value)
    assert "cannot serialize the arguments of sitq.testing.tasks:echo" in message
    assert "'cloudpickle'" in message and "lock" in message
    assert "Pass plain data" in message
    assert isinstance(info.value, ValueError)
    assert (await queue.stats()) == {}, "nothing may be enqueued"


async def test_json_arguments_that_json_cannot_encode(queue: TaskQueue) -> None:
    with pytest.raises(SerializationError, match="cannot serialize the arguments"):
        await queue.options(serializer="json").enqueue(tasks.echo, {1, 2})


async def test_unpicklable_result_fails_the_job(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker():
        job_id = await queue.options(retries=2).enqueue(tasks.unpicklable_result)
        result = await failed_result(queue, job_id)
        await assert_worker_alive(queue)
    assert result.error is not None and result.error.type == "SerializationError"
    assert "return value of sitq.testing.tasks:unpicklable_result" in result.error.message
    assert "could not be serialized with 'cloudpickle'" in result.error.message
    assert "Return plain data" in result.error.message


async def test_json_result_that_json_cannot_encode(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker():
        job_id = await queue.options(serializer="json").enqueue(tasks.echo, 1)
        ok = await queue.get_result(job_id, timeout=10)
        bad_id = await queue.options(serializer="json").enqueue(_returns_a_set)
        result = await failed_result(queue, bad_id)
    assert ok is not None and ok.unwrap() == {"args": [1], "kwargs": {}}
    assert result.error is not None and result.error.type == "SerializationError"
    assert "'json'" in result.error.message


def _returns_a_set() -> set[int]:
    return {1, 2}


# --------------------------------------------------------------------- oversize payloads
async def test_payload_over_max_payload(mem_url: str) -> None:
    async with TaskQueue(mem_url, max_payload=1024) as q:
        await q.enqueue(tasks.echo, "x" * 500)
        with pytest.raises(PayloadTooLarge) as info:
            await q.enqueue(tasks.echo, "x" * 4096)
        with pytest.raises(PayloadTooLarge):
            await q.enqueue_many(tasks.echo, [("small",), ("x" * 4096,)])
        assert (await q.stats())["default"].queued == 1
    message = str(info.value)
    assert "over max_payload (1.0 KiB)" in message
    assert "pass a reference" in message and "SITQ_MAX_PAYLOAD" in message
    assert isinstance(info.value, SerializationError)


async def test_default_max_payload_is_one_mib(queue: TaskQueue,
                                              monkeypatch: pytest.MonkeyPatch,
                                              mem_url: str) -> None:
    await queue.enqueue(tasks.echo, b"x" * 1_000_000)
    with pytest.raises(PayloadTooLarge, match=r"over max_payload \(1.0 MiB\)"):
        await queue.enqueue(tasks.echo, b"x" * (1 << 20))
    monkeypatch.setenv("SITQ_MAX_PAYLOAD", "2MiB")
    bigger = TaskQueue(mem_url)
    assert bigger.max_payload == 2 << 20
    await bigger.enqueue(tasks.echo, b"x" * (1 << 20))


# --------------------------------------------------------------------- datetimes
async def test_naive_eta_is_refused(queue: TaskQueue) -> None:
    naive = datetime(2030, 1, 1, 9, 0)
    with pytest.raises(InvalidDatetime) as info:
        await queue.enqueue(tasks.add, 1, 2, eta=naive)
    message = str(info.value)
    assert "naive" in message and "2030-01-01T09:00:00" in message
    assert "timezone.utc" in message and "ZoneInfo" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidDatetime, match="naive"):
        queue.options(eta=naive)
    with pytest.raises(InvalidDatetime, match="naive"):
        queue.task(eta=naive)
    with pytest.raises(InvalidDatetime, match="must be a datetime"):
        await queue.enqueue(tasks.add, 1, 2, eta="2030-01-01T09:00:00Z")  # type: ignore[arg-type]
    assert await queue.stats() == {}
    # aware datetimes in any zone are fine, and stored in UTC
    berlin = datetime(2030, 1, 1, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    info_ = await queue.inspect(await queue.enqueue(tasks.add, 1, 2, eta=berlin))
    assert info_.eta == datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    assert info_.eta is not None and info_.eta.tzinfo is UTC


async def test_naive_datetime_at_the_backend(queue: TaskQueue) -> None:
    with pytest.raises(InvalidDatetime, match="naive"):
        await queue.backend.claim_tick("report", datetime(2030, 1, 1))
    job = Job(id=new_job_id(), queue="default", task="t:t", payload=b"", serializer="json",
              eta=datetime.now() + timedelta(hours=1))
    with pytest.raises(InvalidDatetime, match="naive"):
        await queue.backend.enqueue(job)


def test_naive_eta_through_the_sync_queue(mem_url: str) -> None:
    with SyncTaskQueue(mem_url) as q, pytest.raises(InvalidDatetime, match="naive"):
        q.enqueue(tasks.add, 1, 2, eta=datetime(2030, 1, 1))


# --------------------------------------------------------------------- unknown names
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", "backend 'redis' is not installed; pip install sitq-redis"),
        ("rediss://localhost:6379/0", "pip install sitq-redis"),
        ("postgresql://localhost/db", "pip install sitq-postgres"),
        ("nats://localhost:4222", "pip install sitq-nats"),
        ("memroy://x", "did you mean 'memory'?"),
        ("nosuchstore://x", "backend 'nosuchstore' is not installed"),
    ],
)
def test_unknown_backend(url: str, expected: str) -> None:
    # As on a machine where the server backends are not installed (this workspace
    # installs them).
    registry = Registry(disabled=["redis", "postgres", "nats"])
    for build in (TaskQueue, Worker):
        with pytest.raises(NotInstalled) as info:
            build(url, registry=registry)
        message = str(info.value)
        assert expected in message
        assert "installed backends:" in message and "memory" in message
        assert isinstance(info.value, LookupError)


@pytest.mark.parametrize("url", ["localhost:6379", "", "sitq.db"])
def test_backend_that_is_not_a_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="must be a URL like"):
        TaskQueue(url or "no-scheme")


def test_backend_of_the_wrong_type() -> None:
    with pytest.raises(ConfigurationError, match="URL string or a Backend instance"):
        TaskQueue(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------- serializers
async def test_serializer_not_in_accept_list(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker(accept=["json", "msgpack"]):
        job_id = await queue.enqueue(tasks.add, 1, 2)  # cloudpickle, the default
        result = await failed_result(queue, job_id)
        ok_id = await queue.options(serializer="json").enqueue(tasks.add, 1, 2)
        ok = await queue.get_result(ok_id, timeout=10)
    assert result.error is not None and result.error.type == "SerializationError"
    assert "serializer 'cloudpickle' is not accepted by this worker" in result.error.message
    assert "accept=['json', 'msgpack']" in result.error.message
    assert "add 'cloudpickle' to the worker's accept list" in result.error.message
    assert ok is not None and ok.unwrap() == 3


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
async def test_lambda_with_a_data_serializer(mem_url: str, serializer: str) -> None:
    factor = 3
    async with TaskQueue(mem_url, serializer=serializer) as q:
        for func in (lambda x: x, lambda x: x * factor):
            with pytest.raises(SerializationError) as info:
                await q.enqueue(func, 1)
            message = str(info.value)
            assert f"cannot be sent with the {serializer!r} serializer" in message
            assert "<lambda>" in message
            assert "Define it at module level" in message
            assert "serializer='cloudpickle'" in message
        assert await q.stats() == {}


async def test_lambda_with_cloudpickle_runs(queue: TaskQueue, run_worker: Any) -> None:
    factor = 3
    async with run_worker():
        job_id = await queue.enqueue(lambda x: x * factor, 5)
        result = await queue.get_result(job_id, timeout=10)
    assert result is not None and result.unwrap() == 15


def test_unknown_serializer_name(mem_url: str) -> None:
    with pytest.raises(NotInstalled) as info:
        TaskQueue(mem_url, serializer="msgpak")
    assert "serializer 'msgpak' is not installed; did you mean 'msgpack'?" in str(info.value)
    assert "installed serializers: cloudpickle, json, msgpack, pickle" in str(info.value)


# --------------------------------------------------------------------- hostile task code
class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str() for you")


def _raise_unprintable() -> None:
    raise _UnprintableError()


async def _sys_exit_async() -> None:
    sys.exit(3)


def _sys_exit_in_thread() -> None:
    raise SystemExit(4)


async def test_exception_whose_str_fails(queue: TaskQueue, run_worker: Any) -> None:
    async with run_worker():
        result = await failed_result(queue, await queue.enqueue(_raise_unprintable))
        await assert_worker_alive(queue)
    assert result.error is not None and result.error.type == "_UnprintableError"
    assert "str() failed" in result.error.message
    assert result.traceback is not None and "_raise_unprintable" in result.traceback


@pytest.mark.parametrize(("func", "code"), [(_sys_exit_async, "3"), (_sys_exit_in_thread, "4")])
async def test_task_calling_sys_exit_fails_the_job_not_the_worker(
    queue: TaskQueue, run_worker: Any, func: Any, code: str
) -> None:
    async with run_worker() as worker:
        result = await failed_result(queue, await queue.options(retries=1).enqueue(func))
        await assert_worker_alive(queue)
    assert result.error is not None
    assert (result.error.type, result.error.message) == ("SystemExit", code)
    assert result.attempts == 2, "SystemExit from a task is an ordinary failure (retried)"
    assert worker.counters.failed == 1
