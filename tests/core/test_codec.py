"""Every wire format in sitq._codec round-trips, reads the unversioned records of sitq 0.1,
and refuses a newer version with an error that says to upgrade."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sitq import Job, SerializationError
from sitq._codec import (
    CALL_VERSION,
    CONTINUATION_VERSION,
    RESULT_VERSION,
    Continuation,
    call_encoder,
    decode_call,
    decode_continuation,
    decode_result,
    decode_value,
    encode_attempt,
    encode_cancelled,
    encode_continuation,
    encode_value,
)
from sitq.plugins import get_registry
from sitq.result import ErrorInfo
from sitq.serializers import Signer
from sitq.testing import tasks

REGISTRY = get_registry()
ROUND_TRIP = settings(max_examples=150, deadline=None)

_text = st.text(max_size=12)
_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text | st.floats(
    allow_nan=False, allow_infinity=False)
#: Values every serializer returns as they went in (json and msgpack make tuples lists).
_data = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=8,
)
_serializers = st.sampled_from(["cloudpickle", "pickle", "json", "msgpack"])
_signers = st.sampled_from([Signer(), Signer("codec-key")])
_times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1),
                      timezones=st.just(UTC))
_errors = st.builds(ErrorInfo, _text, _text, _text)


def _same_time(a: datetime | None, b: datetime | None) -> bool:
    """Times travel as epoch floats: equal to the microsecond's rounding."""
    if a is None or b is None:
        return a is b
    return math.isclose(a.timestamp(), b.timestamp(), abs_tol=2e-6)


# --------------------------------------------------------------------------- call envelope
@ROUND_TRIP
@given(args=st.lists(_data, max_size=4), kwargs=st.dictionaries(_text, _data, max_size=3),
       serializer=_serializers, signer=_signers)
def test_call_envelope_round_trip(args: list[Any], kwargs: dict[str, Any], serializer: str,
                                  signer: Signer) -> None:
    name, encode = call_encoder(tasks.echo, REGISTRY.serializer(serializer), signer, 1 << 20)
    func, got_args, got_kwargs = decode_call(encode(args, kwargs),
                                             REGISTRY.serializer(serializer), signer, name)
    assert func is tasks.echo
    assert (list(got_args), got_kwargs) == (args, kwargs)


@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
def test_call_envelope_versions(serializer: str) -> None:
    ser, signer = REGISTRY.serializer(serializer), Signer()
    legacy = ser.dumps(["sitq.testing.tasks:add", [1, 2], {}])  # sitq 0.1: no version
    assert decode_call(legacy, ser, signer, "t")[1:] == ((1, 2), {})
    newer = ser.dumps([CALL_VERSION + 1, "sitq.testing.tasks:add", [1, 2], {}])
    with pytest.raises(SerializationError, match=r"newer sitq.*upgrade"):
        decode_call(newer, ser, signer, "t")


# --------------------------------------------------------------------------- result envelope
_jobs = st.builds(
    Job, id=_text, queue=_text, task=_text, payload=st.binary(max_size=20),
    serializer=_serializers, headers=st.dictionaries(_text, _text, max_size=2),
    priority=st.integers(-100, 100), eta=st.none() | _times, attempt=st.integers(0, 50),
    failures=st.integers(0, 50), lease_expiries=st.integers(0, 5),
    max_retries=st.integers(0, 50), timeout=st.none() | st.floats(0.1, 1e6),
    key=st.none() | _text, result_ttl=st.none() | st.floats(1, 1e7), created_at=_times,
)


@ROUND_TRIP
@given(job=_jobs, status=st.sampled_from(["success", "failed"]), value=_data,
       error=st.none() | _errors, traceback=st.none() | _text, serializer=_serializers,
       signer=_signers)
def test_attempt_result_round_trip(job: Job, status: Any, value: Any, error: ErrorInfo | None,
                                   traceback: str | None, serializer: str,
                                   signer: Signer) -> None:
    data = encode_attempt(job, status, value, error, traceback, 1_700_000_000.5, "w:1",
                          REGISTRY.serializer(serializer), signer)
    got = decode_result(data, REGISTRY.serializer, signer)
    assert (got.id, got.status, got.error, got.traceback, got.attempts, got.task, got.queue,
            got.worker) == (job.id, status, error, traceback, job.attempt, job.task, job.queue,
                            "w:1")
    assert got.value == (value if status == "success" else None)
    assert _same_time(got.enqueued_at, job.created_at)
    assert got.started_at is not None and got.started_at.timestamp() == 1_700_000_000.5


@ROUND_TRIP
@given(job=st.none() | _jobs, signer=_signers)
def test_cancel_result_round_trip(job: Job | None, signer: Signer) -> None:
    got = decode_result(encode_cancelled("c1", job, REGISTRY.serializer("msgpack"), signer),
                        REGISTRY.serializer, signer)
    assert got.id == "c1" and got.status == "failed" and got.value is None
    assert got.error == ErrorInfo("Cancelled", "the job was cancelled before it ran",
                                  "sitq.errors")
    assert got.finished_at is not None
    assert (got.attempts, got.task, got.queue) == (
        (0, None, None) if job is None else (job.attempt, job.task, job.queue))


def test_result_envelope_versions() -> None:
    signer = Signer()
    legacy = msgpack.packb(["r", "success", None, None, 1, "t:t", "q", None, None, None, "w",
                            "msgpack", msgpack.packb(7)])  # sitq 0.1: no version
    assert decode_result(legacy, REGISTRY.serializer, signer).value == 7
    newer = msgpack.packb([RESULT_VERSION + 1, "r", "success"])
    with pytest.raises(SerializationError, match=r"newer sitq.*upgrade"):
        decode_result(newer, REGISTRY.serializer, signer)


@ROUND_TRIP
@given(job=_jobs, value=_data)
def test_encoding_leaves_its_inputs_alone(job: Job, value: Any) -> None:
    job_before, value_before = dataclasses.replace(job, headers=dict(job.headers)), repr(value)
    encode_attempt(job, "success", value, None, None, 1.0, "w", REGISTRY.serializer("json"),
                   Signer())
    encode_continuation(Continuation([job], b"prev"))
    assert job == job_before and repr(value) == value_before


# --------------------------------------------------------------------------- chains
@ROUND_TRIP
@given(steps=st.lists(_jobs, max_size=3), previous=st.none() | st.binary(max_size=30),
       failed=st.none() | st.tuples(_text, _text))
def test_continuation_round_trip(steps: list[Job], previous: bytes | None,
                                 failed: tuple[str, str] | None) -> None:
    got = decode_continuation(encode_continuation(Continuation(steps, previous, failed)))
    assert (got.previous, got.failed) == (previous, failed)
    assert len(got.steps) == len(steps)
    for mine, theirs in zip(got.steps, steps, strict=True):
        assert mine.to_dict().keys() == theirs.to_dict().keys()
        for name, value in theirs.to_dict().items():
            if name in ("eta", "created_at"):
                assert math.isclose(value or 0, getattr(mine, name).timestamp() if value
                                    else 0, abs_tol=2e-6)
            else:
                assert getattr(mine, name) == value, name


def test_continuation_versions() -> None:
    step = Job(id="s2", queue="q", task="t:t", payload=b"p", serializer="json")
    legacy = msgpack.packb({"steps": [step.to_dict()], "prev": b"v", "failed": None})
    got = decode_continuation(legacy)
    assert got.previous == b"v" and [s.id for s in got.steps] == ["s2"]
    newer = msgpack.packb({"v": CONTINUATION_VERSION + 1, "steps": []})
    with pytest.raises(SerializationError, match=r"newer sitq.*upgrade"):
        decode_continuation(newer)


@ROUND_TRIP
@given(value=_data, serializer=_serializers, signer=_signers)
def test_chain_value_round_trip(value: Any, serializer: str, signer: Signer) -> None:
    ser = REGISTRY.serializer(serializer)
    assert decode_value(encode_value(value, ser, signer), ser, signer) == value
