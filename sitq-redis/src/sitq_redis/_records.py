"""How jobs travel to and from the scripts: msgpack records, key names, times in ms."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgpack

from sitq.job import Job

_STATES = {b"q": "queued", b"r": "running", b"f": "failed"}


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _dt(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


class _Packers(threading.local):
    """msgpack packers, one set per thread: ``msgpack.packb`` builds a new Packer (and its
    buffer) on every call, which costs more than packing a small job."""

    def __init__(self) -> None:
        # Redis's cmsgpack predates the bin type: bytes go as raw strings (Lua sees strings).
        self.lua = msgpack.Packer(use_bin_type=False).pack
        self.blob = msgpack.Packer(use_bin_type=True).pack


_packers = _Packers()


def _packb(obj: Any) -> bytes:
    """msgpack for the scripts (``cmsgpack``)."""
    return _packers.lua(obj)  # type: ignore[no-any-return]


def _pack(job: Job, created: float | None = None) -> bytes:
    """The blob of a job's immutable fields (``created``: ``job.created_at`` as a
    timestamp, when the caller has it already)."""
    return _packers.blob(  # type: ignore[no-any-return]
        [job.id, job.queue, job.task, job.payload, job.serializer, job.headers, job.priority,
         job.max_retries, job.timeout, job.key, job.result_ttl,
         job.created_at.timestamp() if created is None else created, job.chain]
    )


def _plain(job: Job) -> bool:
    """A job ENQUEUE_PLAIN can store: no eta, priority 0, no key, the default result ttl."""
    return (job.eta is None and not job.priority and job.key is None
            and job.result_ttl is None)


def _entry(job: Job) -> tuple[Any, ...]:
    """What the ENQUEUE script takes for one job (see _scripts.ENQUEUE)."""
    created = job.created_at.timestamp()
    eta = job.eta
    if eta is None and not job.priority and job.key is None and job.result_ttl is None:
        return (job.id, _pack(job, created), int(created * 1000))
    order = _ms(eta) if eta is not None else int(created * 1000)
    return (
        job.id, _pack(job, created), order, job.priority,
        0 if eta is None else order,
        "" if job.key is None else job.key,
        0 if job.result_ttl is None else int(job.result_ttl * 1000),
    )


def _resp_args(*args: bytes) -> bytes:
    """Byte strings as Redis protocol bulk strings (the arguments of a command)."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _plain_command(head: bytes, head_args: int, jobs: Sequence[Job], encoding: str,
                   errors: str) -> bytes:
    """One command in the Redis protocol: ``head`` (``head_args`` arguments, see
    :func:`_resp_args`) followed by (id, blob, order) of each plain job, as ENQUEUE_PLAIN
    takes them. What redis-py's ``pack_command`` would make, without its Python work per
    argument."""
    parts = [b"*%d\r\n" % (head_args + 3 * len(jobs)), head]
    append = parts.append
    for job in jobs:
        created = job.created_at.timestamp()
        job_id = job.id.encode(encoding, errors)
        blob = _pack(job, created)
        order = b"%d" % int(created * 1000)
        append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(job_id), job_id, len(blob), blob, len(order), order))
    return b"".join(parts)


def _entries(jobs: list[Job]) -> list[tuple[Any, ...]]:
    """``[_entry(job) for job in jobs]``, with the plain case inlined (the bulk path)."""
    out = []
    for job in jobs:
        if job.eta is None and not job.priority and job.key is None and job.result_ttl is None:
            created = job.created_at.timestamp()
            out.append((job.id, _pack(job, created), int(created * 1000)))
        else:
            out.append(_entry(job))
    return out


def _unpack(blob: bytes, **fields: Any) -> Job:
    (id_, queue, task, payload, serializer, headers, priority, max_retries, timeout, key,
     result_ttl, created, chain) = msgpack.unpackb(blob, raw=False)
    return Job(
        id=id_, queue=queue, task=task, payload=payload, serializer=serializer,
        headers=headers, priority=priority, max_retries=max_retries, timeout=timeout,
        key=key, result_ttl=result_ttl, created_at=datetime.fromtimestamp(created, UTC),
        chain=chain, **fields,
    )


def _job_from_hash(h: dict[bytes, bytes]) -> Job:
    eta = h.get(b"e")
    lu = h.get(b"lu")
    sa = h.get(b"sa")
    worker = h.get(b"w")
    return _unpack(
        h[b"d"],
        state=_STATES.get(h.get(b"st", b"q"), "queued"),
        eta=_dt(eta) if eta else None,
        attempt=int(h.get(b"a", 0)),
        failures=int(h.get(b"f", 0)),
        lease_expiries=int(h.get(b"le", 0)),
        lease_until=_dt(lu) if lu else None,
        started_at=_dt(sa) if sa else None,
        worker=worker.decode() if worker else None,
        cancel_requested=h.get(b"c") == b"1",
    )


class _Keys:
    """The key names of one queue."""

    __slots__ = ("dead", "jobs", "keys", "new", "ready", "res", "results", "run", "sched",
                 "tag", "ticks")

    def __init__(self, prefix: str, queue: str) -> None:
        tag = f"{{{prefix}:{queue}}}"
        self.tag = f"{tag}:"
        self.new = f"{prefix}:new:{queue}"
        self.ready = f"{tag}:ready"
        self.sched = f"{tag}:sched"
        self.run = f"{tag}:run"
        self.dead = f"{tag}:dead"
        self.res = f"{tag}:res"
        self.keys = f"{tag}:keys"
        self.ticks = f"{tag}:ticks"
        self.jobs = f"{tag}:j:"
        self.results = f"{tag}:r:"
