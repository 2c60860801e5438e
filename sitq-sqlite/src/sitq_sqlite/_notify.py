"""Wake-ups: learn that another connection committed, without a busy CPU.

``PRAGMA data_version`` is the truth: a cheap read on the backend's inline connection
whose value changes once another connection's commit is visible. What differs is when
it is read:

* On Linux the backend watches the ``-wal`` file with inotify (three libc calls through
  ``ctypes``; the descriptor sits in the event loop's selector, so an idle process uses
  no CPU). Every commit appends to that file, but the event comes as the frames are
  written, a moment *before* the commit becomes visible (and, with
  ``synchronous=FULL``, before its fsync): so each event makes the backend read
  ``data_version`` at once and then every millisecond for :data:`SETTLE` seconds.
* Elsewhere, or if inotify cannot be set up, ``data_version`` is read while someone
  waits: every 2 ms after a change, backing off to 50 ms when nothing happens.

Waiters take a :attr:`Changes.seen` snapshot *before* they look at the database, then
:meth:`Changes.wait` for a change after it: a commit between the look and the wait is
never missed.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import sqlite3
import sys
from typing import Any

__all__ = ["Changes"]

log = logging.getLogger("sitq.sqlite")

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000

#: The data_version poll (when inotify is unavailable): first and longest interval (s).
POLL_FAST = 0.002
POLL_IDLE = 0.05
#: After an inotify event, ``data_version`` is read every :data:`SETTLE_STEP` seconds for
#: this long (a commit becomes visible a little after its WAL write).
SETTLE = 0.05
SETTLE_STEP = 0.001


def _inotify_fd(path: str) -> int | None:
    """A non-blocking inotify descriptor watching ``path`` for writes, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {path}")
    except (OSError, AttributeError) as exc:
        log.debug("no inotify watch on %s (%s); polling PRAGMA data_version", path, exc)
        return None
    return fd


class Changes:
    """Counts commits to one database file and wakes waiters on each."""

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn  # for PRAGMA data_version when polling
        #: Changes seen so far (a waiter's snapshot).
        self.seen = 0
        self._event = asyncio.Event()
        self._fd: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._waiters = 0
        self._wake = asyncio.Event()
        self._version: Any = None
        self._settle_until = 0.0
        self._settler: asyncio.TimerHandle | None = None

    @property
    def mode(self) -> str:
        """``"inotify"`` or ``"poll"``."""
        return "inotify" if self._fd is not None else "poll"

    def start(self) -> None:
        self._version = self._data_version()
        self._fd = _inotify_fd(self.path + "-wal")
        if self._fd is not None:
            asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        else:
            self._poller = asyncio.create_task(self._poll(), name="sitq-sqlite-changes")

    def wrote(self) -> None:
        """The inline connection committed (``data_version`` counts only the commits of
        other connections)."""
        self._changed()

    async def close(self) -> None:
        if self._settler is not None:
            self._settler.cancel()
            self._settler = None
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        self._changed()  # let waiters look once more and find the backend closed

    async def wait(self, seen: int, timeout: float) -> None:
        """Return once a change after snapshot ``seen`` happened, or after ``timeout`` s."""
        if self.seen != seen or timeout <= 0:
            return
        event = self._event
        self._waiters += 1
        self._wake.set()
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters -= 1

    def _changed(self) -> None:
        self.seen += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass
        except OSError as exc:  # pragma: no cover - the descriptor went bad
            log.debug("inotify read on %s failed: %s", self.path, exc)
        loop = asyncio.get_running_loop()
        self._settle_until = loop.time() + SETTLE
        self._check()
        if self._settler is None:
            self._settler = loop.call_later(SETTLE_STEP, self._settle)

    def _settle(self) -> None:
        self._settler = None
        self._check()
        loop = asyncio.get_running_loop()
        if loop.time() < self._settle_until:
            self._settler = loop.call_later(SETTLE_STEP, self._settle)

    def _data_version(self) -> Any:
        try:
            return self._conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:  # busy (recovery) or closing: look again later
            log.debug("data_version of %s: %s", self.path, exc)
            return self._version

    def _check(self) -> bool:
        """Wake waiters if another connection's commit became visible."""
        version = self._data_version()
        if version == self._version:
            return False
        self._version = version
        self._changed()
        return True

    async def _poll(self) -> None:
        """The fallback: read ``PRAGMA data_version`` while someone waits."""
        delay = POLL_FAST
        while True:
            if not self._waiters:
                self._wake.clear()
                await self._wake.wait()
                delay = POLL_FAST
            delay = POLL_FAST if self._check() else min(delay * 1.5, POLL_IDLE)
            await asyncio.sleep(delay)
