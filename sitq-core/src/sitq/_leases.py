"""Leases: the heartbeat that renews them, and the limit on how often one may expire.

A claimed job is leased to its worker until a deadline; the heartbeat renews every lease
the worker holds each ``lease / 3`` seconds. A lease the store reports ``lost`` (taken
over by another worker) or ``cancel`` (``queue.cancel`` was asked) cancels the job's task.
A job whose leases expired ``max_lease_expiries`` times (its workers died or hung) is not
run again: it fails with :class:`~sitq.errors.WorkerLost`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .errors import WorkerLost

if TYPE_CHECKING:
    from ._fetch import Slots
    from .backend import Backend
    from .job import Job

log = logging.getLogger("sitq.worker")


async def heartbeat(backend: Backend, slots: Slots, lease: float) -> None:
    """Renew the leases of every attempt in ``slots`` until cancelled."""
    while True:
        await asyncio.sleep(lease / 3)
        entries = list(slots.active.values())
        if not entries:
            continue
        try:
            states = await backend.extend([e.job for e in entries], lease)
        except Exception as exc:
            log.warning("heartbeat for %d job(s) failed: %s", len(entries), exc)
            continue
        for entry, state in zip(entries, states, strict=True):
            if state == "ok" or entry.task is None or not entry.executing:
                continue
            if state == "lost":
                log.warning("lease of job %s was lost (taken over); abandoning it", entry.job.id)
            entry.cancel_reason = state
            entry.task.cancel()


def exhausted(job: Job, max_lease_expiries: int) -> WorkerLost | None:
    """The error for a job whose lease expired too often, else ``None``."""
    if job.lease_expiries < max_lease_expiries:
        return None
    return WorkerLost(
        f"the lease of this job expired {job.lease_expiries} times (max_lease_expiries="
        f"{max_lease_expiries}): the workers running it died or hung. Look for crashes, "
        "OOM kills or blocking code, or raise the lease"
    )
