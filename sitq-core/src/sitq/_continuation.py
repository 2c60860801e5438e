"""Continuation: what a worker enqueues after a step of a chain has finished.

The next step is enqueued before the finished step is recorded, so a crash in between runs
this step again rather than losing the rest of the chain (the next step's idempotency key
keeps a re-enqueue from duplicating it). A successful step hands its value on; a failed
one hands on its id and error, so every remaining step fails with ``ChainFailed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._codec import (
    Continuation,
    decode_continuation,
    decode_result,
    encode_continuation,
    encode_value,
)
from .job import Job

if TYPE_CHECKING:
    from ._execute import Attempts
    from .backend import Backend, Finish


async def continue_chain(backend: Backend, attempts: Attempts, item: Finish, value: Any) -> None:
    """Enqueue the step after ``item.job`` (``value`` is what the step returned)."""
    job = item.job
    worker = attempts.worker
    if item.outcome == "success":
        serializer = attempts.serializer(job.serializer)
        nxt = next_step(job, encode_value(value, serializer, worker.signer), None)
    else:
        assert item.result is not None and job.chain is not None
        upstream = decode_continuation(job.chain).failed
        error = decode_result(item.result, worker.registry.serializer, worker.signer).error
        nxt = next_step(job, None, upstream or (job.id, str(error)))
    if nxt is not None:
        await backend.enqueue(nxt)


def next_step(job: Job, previous: bytes | None, failed: tuple[str, str] | None) -> Job | None:
    """The job for the step after ``job`` (``None`` at the end of the chain)."""
    if not job.chain:
        return None
    steps = decode_continuation(job.chain).steps
    if not steps:
        return None
    nxt = steps[0]
    nxt.chain = encode_continuation(Continuation(steps[1:], previous, failed))
    nxt.headers = dict(job.headers)
    # Re-enqueueing a step after a crash must not duplicate it while it is live.
    nxt.key = nxt.key or f"sitq-chain:{nxt.id}"
    return nxt
