"""The job record backends store, and the options that shape it."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .errors import ConfigurationError, InvalidDatetime

__all__ = [
    "Job",
    "JobOptions",
    "JobState",
    "aware_utc",
    "deferred_job_id",
    "is_deferred_id",
    "job_builder",
    "new_job_id",
    "utcnow",
]

#: The states a job moves through. ``queued`` → ``running`` → ``success`` | ``failed``;
#: a retry moves ``running`` back to ``queued`` with a later ``eta``.
JobState = Literal["queued", "running", "success", "failed"]

_id_lock = threading.Lock()
_last_ms = 0
_seq = 0
_ms_hex = ""  # _last_ms in 12 hex digits
#: Random hex digits for ids, drawn from ``os.urandom`` a few KiB at a time (one system
#: call per 256 ids instead of one per id); 14 digits per id.
_RANDOM_BYTES = 1792
_random = ""
_random_at = 0


def _forget_random() -> None:
    """After ``fork()`` the child must not hand out the parent's unused random digits."""
    global _random, _random_at
    _random, _random_at = "", 0


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork either
    os.register_at_fork(after_in_child=_forget_random)


def new_job_id() -> str:
    """A unique, time-ordered id: 12 hex digits of milliseconds, then 20 of sequence+random.

    Ids made by one process sort in creation order; ids from different processes sort by
    millisecond.
    """
    global _last_ms, _seq, _ms_hex, _random, _random_at
    with _id_lock:
        now = time.time_ns() // 1_000_000
        if now > _last_ms:
            _last_ms, _seq, _ms_hex = now, 0, f"{now:012x}"
        else:  # the same millisecond (or the clock went back): keep order by sequence
            _seq += 1
        at = _random_at
        if at >= len(_random):
            _random, at = os.urandom(_RANDOM_BYTES).hex(), 0
        _random_at = at + 14
        return f"{_ms_hex}{_seq:06x}{_random[at : at + 14]}"


#: Set in the sequence digits of a deferred id (a sequence never gets near it: it counts
#: the ids of one millisecond).
_DEFERRED = 0x800000


def deferred_job_id() -> str:
    """An id for a job the store may not hold yet (a chain's later steps, stored by the
    worker that runs the step before; a job enqueued in the caller's transaction, stored
    when it commits): ``get_result`` waits for it rather than call it unknown."""
    job_id = new_job_id()
    return f"{job_id[:12]}{int(job_id[12:18], 16) | _DEFERRED:06x}{job_id[18:]}"


def is_deferred_id(job_id: str) -> bool:
    """Whether ``job_id`` came from :func:`deferred_job_id`."""
    return len(job_id) == 32 and job_id[12] in "89abcdef"


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def aware_utc(value: datetime, what: str = "datetime") -> datetime:
    """Return ``value`` in UTC; reject naive datetimes with an error that says how to fix it."""
    if not isinstance(value, datetime):
        raise InvalidDatetime(
            f"{what} must be a datetime, got {type(value).__name__} {value!r}; "
            "pass e.g. datetime(2027, 1, 1, 9, tzinfo=timezone.utc)"
        )
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidDatetime(
            f"{what} {value.isoformat()} is naive (it has no timezone); sitq only accepts "
            "timezone-aware datetimes. Use datetime.now(timezone.utc) or "
            "value.replace(tzinfo=ZoneInfo('Europe/Berlin')) to say which time you mean"
        )
    return value.astimezone(UTC)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Per-call options, set through ``queue.options(...)`` or ``@queue.task(...)``.

    ``delay`` (seconds) and ``eta`` (aware datetime) are mutually exclusive. ``priority``:
    a higher number runs first among due jobs of one queue. ``retries``: how many times a
    job that *raised* is run again (lease expiries do not count). ``timeout``: seconds
    before the job is failed with ``TaskTimeout``. ``key``: an idempotency key; enqueueing
    while a job of the same queue with the same key is queued or running returns that
    job's id. ``connection``: the caller's database connection inside an open transaction;
    the job exists only if that transaction commits (backends with
    ``supports_transactions``; others raise ``NotSupported``).
    """

    queue: str | None = None
    delay: float | None = None
    eta: datetime | None = None
    retries: int | None = None
    timeout: float | None = None
    priority: int | None = None
    key: str | None = None
    serializer: str | None = None
    result_ttl: float | None = None
    connection: Any = field(default=None, compare=False, repr=False)

    def merge(self, **changes: Any) -> JobOptions:
        """A copy with the given options replaced; unknown names are a clear error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            import difflib

            hints = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
            hint = f" (did you mean {', '.join(repr(h) for h in hints)}?)" if hints else ""
            raise ConfigurationError(
                f"unknown job option(s) {', '.join(unknown)}{hint}; "
                f"valid options are: {', '.join(sorted(known))}"
            )
        merged = dataclasses.replace(
            self, **{k: v for k, v in changes.items() if v is not None}
        )
        merged.validate()
        return merged

    def validate(self) -> None:
        if self.delay is not None and self.eta is not None:
            raise ConfigurationError("give either delay= (seconds) or eta= (datetime), not both")
        if self.delay is not None and (not _is_number(self.delay) or self.delay < 0):
            raise ConfigurationError(f"delay must be a number of seconds >= 0, got {self.delay!r}")
        if self.eta is not None:
            aware_utc(self.eta, "eta")
        if self.retries is not None and (not _is_int(self.retries) or self.retries < 0):
            raise ConfigurationError(f"retries must be an int >= 0, got {self.retries!r}")
        if self.timeout is not None and (not _is_number(self.timeout) or self.timeout <= 0):
            raise ConfigurationError(
                f"timeout must be a number of seconds > 0, got {self.timeout!r}"
            )
        if self.priority is not None and not _is_int(self.priority):
            raise ConfigurationError(f"priority must be an int, got {self.priority!r}")
        if self.queue is not None and (not isinstance(self.queue, str) or not self.queue):
            raise ConfigurationError(f"queue must be a non-empty string, got {self.queue!r}")
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise ConfigurationError(f"key must be a non-empty string, got {self.key!r}")
        if self.serializer is not None and (
            not isinstance(self.serializer, str) or not self.serializer
        ):
            raise ConfigurationError(
                f"serializer must be a serializer name such as 'json', got {self.serializer!r}"
            )
        if self.result_ttl is not None and (
            not _is_number(self.result_ttl) or self.result_ttl <= 0
        ):
            raise ConfigurationError(
                f"result_ttl must be a number of seconds > 0, got {self.result_ttl!r}"
            )

    def resolve_eta(self, now: datetime | None = None) -> datetime | None:
        if self.eta is not None:
            return aware_utc(self.eta, "eta")
        if self.delay:
            return (now or utcnow()) + timedelta(seconds=self.delay)
        return None


@dataclass(slots=True)
class Job:
    """The record a backend stores and hands out.

    Backends treat ``payload`` as opaque bytes (already serialized and, with a secret key,
    signed). ``task`` is the readable name of the callable (``module:qualname``) for
    ``inspect`` and error messages. ``attempt`` counts claims and doubles as the fencing
    token: a backend increments it on every claim, and refuses a heartbeat or finish that
    carries an older value. ``failures`` counts attempts that raised (compared with
    ``max_retries``); ``lease_expiries`` counts claims whose lease ran out.
    """

    id: str
    queue: str
    task: str
    payload: bytes
    serializer: str
    headers: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    eta: datetime | None = None
    attempt: int = 0
    failures: int = 0
    lease_expiries: int = 0
    max_retries: int = 0
    timeout: float | None = None
    key: str | None = None
    result_ttl: float | None = None
    created_at: datetime = field(default_factory=utcnow)
    chain: bytes | None = None
    # Filled in by backends on reads (claim, get_job); not set by producers.
    state: JobState = "queued"
    lease_until: datetime | None = None
    worker: str | None = None
    started_at: datetime | None = None
    cancel_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A dict of plain values (bytes, str, int, float, None; datetimes as epoch floats).

        Backends that store a job as one blob can use :meth:`to_dict`/:meth:`from_dict`
        with msgpack; the round trip is lossless.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.timestamp()
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        kwargs = dict(data)
        for name in _DATETIME_FIELDS:
            value = kwargs.get(name)
            if value is not None and not isinstance(value, datetime):
                kwargs[name] = datetime.fromtimestamp(value, UTC)
        return cls(**kwargs)


_DATETIME_FIELDS = ("eta", "created_at", "lease_until", "started_at")


def job_builder(*names: str) -> Callable[..., Job]:
    """A function taking the fields ``names`` positionally, in that order, and returning
    the :class:`Job`; fields not named get their defaults.

    It is generated from the dataclass's fields, so it never depends on their order (a
    new field shifts nothing), and it calls ``Job`` positionally: a hot path (a producer,
    a backend mapping rows by column name) pays for a positional call, not for matching a
    dozen keywords (measured in bench/job_bench.py)::

        from_row = job_builder("id", "queue", "task", "payload", "serializer")
        job = from_row(*row)
    """
    fields = [f for f in dataclasses.fields(Job) if f.init]
    unknown = [n for n in names if n not in {f.name for f in fields}]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"job_builder: unknown or repeated Job fields {unknown or names}")
    last = max((i for i, f in enumerate(fields) if f.name in names), default=-1)
    namespace: dict[str, Any] = {"Job": Job}
    args = []
    for f in fields[: last + 1]:  # the fields after the last named one keep their defaults
        if f.name in names:
            args.append(f.name)
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            args.append(f"_factory_{f.name}()")
        elif f.default is not dataclasses.MISSING:
            namespace[f"_default_{f.name}"] = f.default
            args.append(f"_default_{f.name}")
        else:
            raise ValueError(f"job_builder: the required Job field {f.name!r} is not named")
    source = f"def build({', '.join(names)}):\n    return Job({', '.join(args)})\n"
    exec(source, namespace)
    build: Callable[..., Job] = namespace["build"]
    return build
