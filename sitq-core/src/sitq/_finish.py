"""Finishing: recording finished attempts in batches.

Whatever finished while the last write was in flight goes to the store in the next single
``Backend.finish_many`` call. Jobs do not wait for their write, so one job costs one task
step instead of two; ``recorded(entry, outcome)`` is called once per submitted attempt
after its write: ``True`` (recorded), ``False`` (refused: the lease was taken over) or the
exception that made the finisher give up. A failing store is retried with a backoff, until
the worker's grace is over (:meth:`Finisher.give_up`): then unrecorded attempts keep their
lease, which expires, and they run again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .backend import Backend, Finish

if TYPE_CHECKING:
    from ._fetch import Active

log = logging.getLogger("sitq.worker")

#: Most attempts one ``finish_many`` call records.
BATCH = 500


class Finisher:
    """Batches finished attempts of one worker; see the module docstring."""

    def __init__(
        self, backend: Backend, recorded: Callable[[Active, bool | BaseException], None]
    ) -> None:
        self.backend = backend
        self.recorded = recorded
        self.pending: list[tuple[Finish, Active]] = []
        self._event = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sitq-finisher")

    def submit(self, item: Finish, entry: Active) -> None:
        self.pending.append((item, entry))
        self._idle.clear()
        self._event.set()

    def give_up(self) -> None:
        """Stop retrying writes to a store that keeps failing (a dead store would hold
        the worker forever): what cannot be written is reported and dropped."""
        self._closing = True
        self._event.set()

    async def _loop(self) -> None:
        delay = 0.05
        while True:
            await self._event.wait()
            await asyncio.sleep(0)  # let jobs finishing in this loop turn join the batch
            self._event.clear()
            while self.pending:
                batch = self.pending[:BATCH]
                try:
                    oks = await self.backend.finish_many([item for item, _ in batch])
                except Exception as exc:
                    log.warning("could not record %d finished job(s), retrying in %.2fs: %s",
                                len(batch), delay, exc)
                    if self._closing and delay > 2:
                        del self.pending[: len(batch)]
                        for _, entry in batch:
                            self.recorded(entry, exc)
                        continue
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.05
                del self.pending[: len(batch)]
                for (_, entry), ok in zip(batch, oks, strict=True):
                    self.recorded(entry, ok)
            self._idle.set()

    async def close(self) -> None:
        """Write what is pending (giving up on a failing store), then stop."""
        self.give_up()
        if self._task is not None and not self._task.done():
            await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
