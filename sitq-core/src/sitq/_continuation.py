"""Continuation: what a worker enqueues after a step of a chain has finished.

The next step is enqueued before the finished step is recorded, so a crash in between runs
this step again rather than losing the rest of the chain (the next step's idempotency key
keeps a re-enqueue from duplicating it). A successful step hands its value on; a failed
one hands on its id and error, so every remaining step fails with ``ChainFailed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._codec import decode_result
from .chain import next_step, unpack_continuation

if TYPE_CHECKING:
    from ._execute import Attempts
    from .backend import Backend, Finish


async def continue_chain(backend: Backend, attempts: Attempts, item: Finish, value: Any) -> None:
    """Enqueue the step after ``item.job`` (``value`` is what the step returned)."""
    job = item.job
    worker = attempts.worker
    if item.outcome == "success":
        serializer = attempts.serializer(job.serializer)
        nxt = next_step(job, worker.signer.sign(serializer.dumps(value)), None)
    else:
        assert item.result is not None and job.chain is not None
        _, _, upstream = unpack_continuation(job.chain)
        error = decode_result(item.result, worker.registry.serializer, worker.signer).error
        nxt = next_step(job, None, upstream or (job.id, str(error)))
    if nxt is not None:
        await backend.enqueue(nxt)
