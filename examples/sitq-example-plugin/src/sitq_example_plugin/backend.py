"""ExampleBackend: the in-memory store under its own ``example://`` scheme.

A real plugin would talk to its store here; this one reuses sitq's MemoryBackend so the
example stays short, and counts what it stores so a test can see it was really used.
"""

from __future__ import annotations

from typing import ClassVar

from sitq.backends.memory import MemoryBackend
from sitq.job import Job


class ExampleBackend(MemoryBackend):
    schemes: ClassVar[tuple[str, ...]] = ("example",)
    enqueued: ClassVar[int] = 0

    async def _enqueue(self, jobs: list[Job]) -> list[str]:
        type(self).enqueued += len(jobs)
        return await super()._enqueue(jobs)
