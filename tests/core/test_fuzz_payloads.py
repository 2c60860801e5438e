"""Garbage, truncated and tampered bytes reach the decode paths only as sitq errors, and a
malicious pickle never runs when a secret key is configured."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sitq import Job, Result, SerializationError, SignatureError, SitqError, TaskQueue
from sitq._codec import RESULT_VERSION, call_encoder, decode_result, encode_attempt
from sitq.backend import Finish
from sitq.job import new_job_id, utcnow
from sitq.plugins import get_registry
from sitq.result import ErrorInfo
from sitq.serializers import PickleSerializer, Signer
from sitq.testing import tasks
from sitq.worker import Worker

REGISTRY = get_registry()
KEYED = Worker("memory://fuzz-keyed", secret_key="fuzz-key", handle_signals=False)
OPEN = Worker("memory://fuzz-open", handle_signals=False)
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _job(payload: bytes, serializer: str) -> Job:
    return Job(id=new_job_id(), queue="q", task="fuzz:job", payload=payload,
               serializer=serializer)


def _payload(serializer: str, signer: Signer) -> bytes:
    _, encode = call_encoder(tasks.echo, REGISTRY.serializer(serializer), signer, 1 << 20)
    return encode((1, "two", [3.0]), {"k": "v"})


def _prepare_only_raises_sitq_errors(worker: Worker, job: Job) -> None:
    try:
        call = worker._attempts.prepare(job)
    except SitqError:
        return
    assert callable(call.func)


# --------------------------------------------------------------------- the worker's decode path
@FUZZ
@given(data=st.binary(max_size=300), serializer=st.sampled_from(["json", "msgpack"]))
def test_garbage_payload_for_data_serializers(data: bytes, serializer: str) -> None:
    _prepare_only_raises_sitq_errors(OPEN, _job(data, serializer))
    _prepare_only_raises_sitq_errors(KEYED, _job(data, serializer))


@FUZZ
@given(data=st.binary(max_size=300),
       serializer=st.sampled_from(["cloudpickle", "pickle", "json", "msgpack"]))
def test_garbage_payload_with_a_key_is_refused_unread(data: bytes, serializer: str) -> None:
    with pytest.raises(SignatureError):
        KEYED._attempts.prepare(_job(data, serializer))


@FUZZ
@given(serializer=st.sampled_from(["cloudpickle", "pickle", "json", "msgpack"]),
       cut=st.floats(min_value=0, max_value=0.999))
def test_truncated_payload(serializer: str, cut: float) -> None:
    """Every strict prefix of a real payload is refused with a sitq error."""
    for worker, signer in ((OPEN, Signer()), (KEYED, Signer("fuzz-key"))):
        payload = _payload(serializer, signer)
        with pytest.raises(SitqError):
            worker._attempts.prepare(_job(payload[: int(len(payload) * cut)], serializer))


@FUZZ
@given(serializer=st.sampled_from(["cloudpickle", "pickle", "json", "msgpack"]),
       position=st.floats(min_value=0, max_value=0.999), flip=st.integers(1, 255))
def test_tampered_signed_payload(serializer: str, position: float, flip: int) -> None:
    payload = bytearray(_payload(serializer, Signer("fuzz-key")))
    payload[int(len(payload) * position)] ^= flip
    with pytest.raises(SignatureError):
        KEYED._attempts.prepare(_job(bytes(payload), serializer))


@FUZZ
@given(serializer=st.sampled_from(["json", "msgpack"]),
       position=st.floats(min_value=0, max_value=0.999), flip=st.integers(1, 255))
def test_tampered_unsigned_data_payload(serializer: str, position: float, flip: int) -> None:
    payload = bytearray(_payload(serializer, Signer()))
    payload[int(len(payload) * position)] ^= flip
    _prepare_only_raises_sitq_errors(OPEN, _job(bytes(payload), serializer))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(data=st.lists(_json_values, max_size=4) | _json_values)
def test_well_formed_but_wrong_shaped_payload(data: Any) -> None:
    """msgpack that decodes fine but is not ``[task, args, kwargs]`` (or names junk)."""
    _prepare_only_raises_sitq_errors(OPEN, _job(msgpack.packb(data), "msgpack"))


# --------------------------------------------------------------------- decode_result
def _result_bytes(signer: Signer, status: Any = "success") -> bytes:
    job = Job(id="r1", queue="q", task="t:t", payload=b"", serializer="msgpack", attempt=1)
    failed = status == "failed"
    return encode_attempt(job, status, None if failed else {"a": [1, 2]},
                          ErrorInfo("ValueError", "no") if failed else None,
                          "tb" if failed else None, utcnow().timestamp(), "w",
                          REGISTRY.serializer("msgpack"), signer)


def _decode_only_raises_sitq_errors(data: bytes, signer: Signer) -> None:
    try:
        result = decode_result(data, REGISTRY.serializer, signer)
    except SitqError:
        return
    assert isinstance(result, Result)
    assert result.status in ("pending", "success", "failed")
    assert isinstance(result.id, str)
    assert isinstance(result.attempts, int)
    assert result.traceback is None or isinstance(result.traceback, str)
    if result.error is not None:
        assert all(isinstance(part, str) for part in
                   (result.error.type, result.error.message, result.error.module))
    for value in (result.enqueued_at, result.started_at, result.finished_at):
        assert value is None or value.utcoffset() is not None


@FUZZ
@given(data=st.binary(max_size=300))
def test_garbage_result(data: bytes) -> None:
    _decode_only_raises_sitq_errors(data, Signer())
    with pytest.raises(SignatureError):
        decode_result(data, REGISTRY.serializer, Signer("fuzz-key"))


@FUZZ
@given(cut=st.floats(min_value=0, max_value=0.999), status=st.sampled_from(["success", "failed"]))
def test_truncated_result(cut: float, status: str) -> None:
    for signer in (Signer(), Signer("fuzz-key")):
        data = _result_bytes(signer, status)
        with pytest.raises(SitqError):
            decode_result(data[: int(len(data) * cut)], REGISTRY.serializer, signer)


_FIELD_VALUES = (_json_values | st.binary(max_size=20)
                 | st.sampled_from(["json", "msgpack", "success", "failed"]))


@FUZZ
@example(record=[RESULT_VERSION, 1, 5] + [None] * 11)
@example(record=[RESULT_VERSION, "x", "failed", "abc"] + [None] * 10)
@example(record=[RESULT_VERSION, "x", "failed", [1, 2, 3], None, "many"] + [None] * 8)
@example(record=[RESULT_VERSION, "x", "success", None, 5, 0, None, None, "x"] + [None] * 5)
@example(record=[RESULT_VERSION, "x", "success"] + [None] * 9 + ["json", b"\x01"])
@example(record=[RESULT_VERSION, "x", "success"] + [None] * 9 + ["no-such", b"1"])
@example(record=[RESULT_VERSION, "x", "success", None, None, 0] + [None] * 4 + [1e300] + [None] * 3)
@example(record=[RESULT_VERSION + 1, "x", "success"])
@example(record={"id": "x", "s": "success"})
@given(record=st.lists(_FIELD_VALUES, max_size=15).map(lambda r: [RESULT_VERSION, *r])
       | st.lists(_FIELD_VALUES, min_size=13, max_size=13)
       | st.dictionaries(st.text(max_size=4), _FIELD_VALUES, max_size=14))
def test_well_formed_but_wrong_shaped_result(record: Any) -> None:
    _decode_only_raises_sitq_errors(msgpack.packb(record), Signer())


def test_real_results_round_trip() -> None:
    for signer in (Signer(), Signer("fuzz-key")):
        ok = decode_result(_result_bytes(signer), REGISTRY.serializer, signer)
        assert ok.value == {"a": [1, 2]} and ok.status == "success"
        bad = decode_result(_result_bytes(signer, "failed"), REGISTRY.serializer, signer)
        assert str(bad.error) == "ValueError: no"


# --------------------------------------------------------------------- malicious pickles
class _Evil:
    """Unpickling this calls ``os.mkdir(path)``: the sentinel proves code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))


def _evil_payload(path: Path) -> bytes:
    return PickleSerializer().dumps([_Evil(path), [], {}])


def test_the_malicious_payload_really_runs_code(tmp_path: Path) -> None:
    """Control: unpickled without checks, the payload creates its sentinel."""
    control = tmp_path / "control"
    pickle.loads(_evil_payload(control))
    assert control.exists()


@pytest.mark.anyio
@pytest.mark.timeout(30)
@pytest.mark.parametrize("serializer", ["pickle", "cloudpickle"])
@pytest.mark.parametrize("forged_key", [None, "attacker-key"])
async def test_malicious_pickle_is_never_unpickled_with_a_secret_key(
    mem_url: str, tmp_path: Path, serializer: str, forged_key: str | None
) -> None:
    sentinel = tmp_path / "pwned"
    payload = Signer(forged_key).sign(_evil_payload(sentinel))
    async with TaskQueue(mem_url, secret_key="real-key") as queue:
        job = Job(id=new_job_id(), queue="default", task="evil:job", payload=payload,
                  serializer=serializer)
        await queue.backend.enqueue(job)  # someone with write access to the store
        async with Worker(mem_url, secret_key="real-key", handle_signals=False) as worker:
            result = await queue.get_result(job.id, timeout=10)
            good = await queue.get_result(await queue.enqueue(tasks.add, 1, 2), timeout=10)
    assert not sentinel.exists(), "the malicious pickle was unpickled"
    assert result is not None and result.status == "failed"
    assert result.error is not None and result.error.type == "SignatureError"
    assert good is not None and good.unwrap() == 3
    assert worker.counters.failed == 1


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_malicious_result_is_never_unpickled_by_a_keyed_client(
    mem_url: str, tmp_path: Path
) -> None:
    """A forged, unsigned result in the store is refused before its value is unpickled."""
    sentinel = tmp_path / "pwned-result"
    record = [RESULT_VERSION, "x", "success", *[None] * 9, "pickle",
              pickle.dumps(_Evil(sentinel))]
    forged = msgpack.packb(record, use_bin_type=True)
    async with TaskQueue(mem_url, secret_key="real-key") as queue:
        job_id = await queue.enqueue(tasks.noop)
        [claimed] = await queue.backend.claim(["default"], worker="attacker")
        assert await queue.backend.finish_many([Finish(claimed, "success", forged)]) == [True]
        with pytest.raises(SignatureError, match="unsigned result"):
            await queue.get_result(job_id)
        with pytest.raises(SignatureError):
            await queue.inspect(job_id)
    assert not sentinel.exists()
    with pytest.raises(SerializationError):  # sanity: the forged bytes are a "result"
        decode_result(forged[:-3], REGISTRY.serializer, Signer())
