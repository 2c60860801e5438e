"""A stdlib ``sqlite3`` connection owned by one thread, and the write-lock discipline.

The backend runs each storage step as *one* function call on this thread: ``BEGIN
IMMEDIATE`` … ``COMMIT`` never returns to the event loop in between, so the write lock
is held for the few microseconds of the SQL and never while other coroutines run. (An
asyncio wrapper such as aiosqlite awaits every statement separately; its public API
cannot run a transaction in one call, and a transaction spread over several awaits
holds the lock across unrelated work.)

Waiting for the write lock is done here, not by SQLite's busy handler: SQLite's handler
sleeps longer and longer (up to 100 ms between tries), so a writer that has waited a
while keeps losing the lock to processes that write back to back. :func:`begin` tries
again every millisecond or so, which gives every waiting process an even chance each
time the lock comes free.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ConnectionThread", "LockTimeout", "begin", "is_busy", "transaction"]

log = logging.getLogger("sitq.sqlite")

T = TypeVar("T")

#: ``PRAGMA busy_timeout`` of sitq's connections (ms): SQLite's own wait, kept short so
#: that :func:`begin` polls at a steady pace.
BUSY_POLL_MS = 2


class LockTimeout(sqlite3.OperationalError):
    """The write lock stayed taken for the whole wait (raised on the connection thread)."""


def is_busy(exc: BaseException) -> bool:
    """True for SQLITE_BUSY / SQLITE_LOCKED (another connection holds a lock)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def begin(conn: sqlite3.Connection, wait: float) -> None:
    """``BEGIN IMMEDIATE``, retried every ~1 ms (jittered) for up to ``wait`` seconds.

    ``wait == 0`` tries once (the inline connection: a busy database sends the step to
    the thread, which waits).
    """
    deadline = 0.0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            now = time.monotonic()
            deadline = deadline or now + wait
            if now >= deadline:
                name = getattr(exc, "sqlite_errorname", "")
                raise LockTimeout(f"{exc}, {name}" if name else str(exc)) from exc
            time.sleep(0.0005 + random.random() * 0.001)


def transaction(
    conn: sqlite3.Connection, wait: float, body: Callable[..., T], *args: Any
) -> T:
    """Run ``body(conn, now, *args)`` inside ``BEGIN IMMEDIATE`` … ``COMMIT``; ``now`` is
    read after the write lock is taken."""
    begin(conn, wait)
    try:
        out = body(conn, time.time(), *args)
        conn.execute("COMMIT")
        return out
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class ConnectionThread:
    """One ``sqlite3.Connection``, opened, used and closed on one daemon thread.

    :meth:`submit` hands ``fn(conn, *args)`` to the thread at once and returns a future
    of the event loop that submitted it; calls run one at a time, in submission order.
    """

    def __init__(self, path: str, name: str = "sitq-sqlite") -> None:
        self.path = path
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._closed = False

    async def open(self, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Start the thread, connect, and run ``setup(conn)`` there. On failure the thread
        has ended when this raises."""
        self._thread.start()
        try:
            await self.submit(setup)
        except BaseException:
            await self.close()
            raise

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if self._closed:
            raise RuntimeError(f"the SQLite connection to {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._calls.put((loop, future, fn, args))
        return future

    async def close(self) -> None:
        """Let queued calls finish, close the connection and end the thread."""
        if self._closed:
            return
        self._closed = True
        self._calls.put(None)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                call = self._calls.get()
                if call is None:
                    return
                loop, future, fn, args = call
                try:
                    if conn is None:
                        conn = sqlite3.connect(
                            self.path, timeout=BUSY_POLL_MS / 1000, isolation_level=None,
                            cached_statements=256,
                        )
                    value, ok = fn(conn, *args), True
                except BaseException as exc:  # handed to the awaiting coroutine
                    value, ok = exc, False
                try:
                    loop.call_soon_threadsafe(_settle, future, ok, value)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    log.debug("SQLite call finished after its event loop closed")
                del call, future, value  # hold nothing of this call while the next runs
        finally:
            if conn is not None:
                conn.close()
