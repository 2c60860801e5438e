"""Job records and claims for storage-level conformance tests."""

from __future__ import annotations

from typing import Any

from ..backend import Backend
from ..job import Job, new_job_id

__all__ = ["claim_all", "make_job"]


def make_job(queue: str, **fields: Any) -> Job:
    """A job record with a dummy payload, for storage-level tests."""
    fields.setdefault("payload", b"\x00payload\xff")
    return Job(
        id=new_job_id(), queue=queue, task="sitq.testing.tasks:noop", serializer="msgpack",
        **fields,
    )


async def claim_all(backend: Backend, queue: str, lease: float = 30.0) -> list[Job]:
    """Every due job of ``queue`` (up to 1,000), leased to worker ``t``."""
    return await backend.claim([queue], limit=1000, lease=lease, worker="t")
