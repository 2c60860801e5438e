"""Shutdown: signals, stop requests and the graceful drain.

The first SIGINT/SIGTERM (or ``worker.stop()``) stops fetching and lets running jobs finish
within the grace period (``shutdown_grace``, or the ``grace`` given to ``stop``); what still
runs after it is cancelled and released back to the queue. A second signal ends the grace
at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._fetch import Slots
    from ._finish import Finisher

log = logging.getLogger("sitq.worker")


class Shutdown:
    """When and how fast one worker stops."""

    def __init__(self, grace: float) -> None:
        #: The grace of a stop without one (``shutdown_grace``).
        self.default_grace = grace
        self.requested = False
        #: A grace given by ``stop(grace=...)`` or a second signal (the shortest wins).
        self.grace: float | None = None
        self._stop: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._signals: list[int] = []

    def arm(self, wake: asyncio.Event) -> None:
        """Make the events of one run (on its event loop); a stop also sets ``wake``."""
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._wake = wake
        if self.requested:
            self._stop.set()

    def request(self, grace: float | None = None) -> None:
        """Stop fetching; ``grace`` shortens the time running jobs get."""
        self.requested = True
        if grace is not None:
            self.grace = grace if self.grace is None else min(grace, self.grace)
            if self._hurry is not None:
                self._hurry.set()
        for event in (self._stop, self._wake):
            if event is not None:
                event.set()

    @property
    def event(self) -> asyncio.Event:
        """Set once a stop is requested (after :meth:`arm`)."""
        assert self._stop is not None
        return self._stop

    async def wait(self) -> None:
        """Return once a stop is requested."""
        await self.event.wait()

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if a stop is requested meanwhile."""
        try:
            await asyncio.wait_for(self.wait(), delay)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ signals
    def install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle SIGINT and SIGTERM (in the main thread only, where Python gets them)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.on_signal, sig)
                self._signals.append(sig)
            except (NotImplementedError, RuntimeError):
                pass

    def remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()

    def on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.requested:
            log.warning("second %s: stopping now, releasing running jobs", name)
            self.request(0.0)
        else:
            log.info("%s: finishing running jobs (up to %.0fs), then stopping", name,
                     self.default_grace)
            self.request()

    # ------------------------------------------------------------------ drain
    async def drain(self, slots: Slots, finisher: Finisher) -> None:
        """Wait for running jobs within the grace, then cancel and release the rest."""
        if not slots.active:
            return
        assert self._hurry is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        log.info("waiting up to %.1fs for %d running job(s)", self._grace(), len(slots.active))
        while True:
            running = [a.task for a in slots.running() if a.task is not None]
            # A second signal or stop(grace=...) may shorten the grace while we wait.
            remaining = began + self._grace() - loop.time()
            if not running or remaining <= 0:
                break
            self._hurry.clear()
            hurry = asyncio.ensure_future(self._hurry.wait())
            try:
                await asyncio.wait([*running, hurry], timeout=remaining,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                hurry.cancel()
        left = slots.running()
        if not left:
            return
        # The grace is over: unrecorded jobs keep their lease, which expires, so they run
        # again: nothing is lost.
        finisher.give_up()
        for entry in left:
            if entry.executing and entry.task is not None:
                entry.cancel_reason = "shutdown"
                entry.task.cancel()
        log.info("releasing %d unfinished job(s) back to the queue", len(left))
        await asyncio.wait([a.task for a in left if a.task is not None])

    def _grace(self) -> float:
        return self.default_grace if self.grace is None else self.grace
