"""How a storage step reaches the database: group commit on the connection thread, and
small steps inline on the event loop.

* Every write step is ``body(conn, now, *args)`` run inside one ``BEGIN IMMEDIATE`` …
  ``COMMIT`` on the :class:`~._connection.ConnectionThread`.
* Steps that arrive while a transaction runs are **group-committed**: the next
  transaction runs all of them (each in its own ``SAVEPOINT``, so one failing step rolls
  back alone), which turns a worker's claim and its batched finish into one transaction
  and one thread hop instead of two.
* Small steps (a single enqueue, a one-row read) run on the event loop over a second
  connection when nothing of ours is in flight: a thread hop costs more than their SQL.
  That connection never waits for the lock (a busy database sends the step to the
  thread) and never checkpoints (that may ``fsync``); the thread's connection does.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sitq.errors import BackendError, BackendUnavailable

from ._connection import ConnectionThread, LockTimeout, begin, is_busy, transaction

__all__ = ["Store"]

log = logging.getLogger("sitq.sqlite")

T = TypeVar("T")

#: After this many inline writes, the connection thread checkpoints the WAL.
INLINE_CHECKPOINT = 500


def _checkpoint(conn: sqlite3.Connection) -> None:
    # Read the statement to its end: a statement left open keeps a read transaction, and
    # the connection's next BEGIN IMMEDIATE would then fail with SQLITE_BUSY_SNAPSHOT for
    # as long as anything else commits (a "database is locked" that waiting never ends).
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class _Op:
    """One step waiting for the next group transaction."""

    __slots__ = ("args", "body", "future")

    def __init__(
        self, body: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any]
    ) -> None:
        self.body = body
        self.args = args
        self.future = future


class Store:
    """The connections of one backend and the way steps run on them.

    ``lock_wait``: seconds a write waits for the lock before it fails with a
    :class:`BackendError`; ``max_group``: most steps in one transaction.
    """

    def __init__(self, path: str, *, lock_wait: float, max_group: int) -> None:
        self.path = path
        self.lock_wait = lock_wait
        self.max_group = max_group
        self._thread: ConnectionThread | None = None
        self.inline: sqlite3.Connection | None = None
        self.inline_writes_allowed = False
        self._inline_writes = 0
        self._ops: list[_Op] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        self._checkpoints: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def open(
        self, setup: Callable[[sqlite3.Connection], None], *, inline_writes: bool
    ) -> None:
        thread = ConnectionThread(self.path)
        try:
            await thread.open(setup)
        except sqlite3.Error as exc:
            raise BackendUnavailable(
                f"cannot open the SQLite database {self.path}: {exc}. Check that the "
                "directory exists and is writable"
            ) from exc
        self._thread = thread
        self.inline = self._open_inline()
        self.inline_writes_allowed = inline_writes and self.inline is not None

    def _open_inline(self) -> sqlite3.Connection | None:
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:  # pragma: no cover - the thread's connection worked
            log.debug("no inline connection to %s: %s", self.path, exc)
            return None
        return conn

    async def close(self) -> None:
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.gather(flusher, return_exceptions=True)
        if self._checkpoints:
            await asyncio.gather(*self._checkpoints, return_exceptions=True)
        inline, self.inline = self.inline, None
        if inline is not None:
            inline.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            await thread.close()

    # ------------------------------------------------------------------ errors
    def error(self, exc: BaseException) -> BaseException:
        """The error a caller sees for ``exc`` raised by a step."""
        if isinstance(exc, LockTimeout) or is_busy(exc):
            return BackendError(
                f"the SQLite database {self.path} stayed locked for {self.lock_wait:.0f}s "
                f"({exc}); another process holds a long write transaction. Raise "
                "busy_timeout or find that process"
            )
        if isinstance(exc, sqlite3.Error):
            return BackendError(f"SQLite error on {self.path}: {exc}")
        return exc

    # ------------------------------------------------------------------ the thread
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the connection thread (no transaction of ours)."""
        try:
            return await self._submit(fn, *args)  # type: ignore[no-any-return]
        except (sqlite3.Error, LockTimeout) as exc:
            raise self.error(exc) from exc

    def _submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if self._thread is None:
            raise BackendUnavailable(f"the SQLite connection to {self.path} is closed")
        return self._thread.submit(fn, *args)

    async def write(self, body: Callable[..., T], *args: Any) -> T:
        """Run ``body(conn, now, *args)`` in the next group transaction."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(body, args, future))
        if not self._flushing:
            # Nothing in flight: hand this step to the connection thread now, not from a
            # task (a task starts only after every ready job of the loop has run, and a
            # worker's next claim must overlap with the jobs it just started). The
            # flusher task then owns the step: cancelling a waiter never loses it.
            self._flushing = True
            ops = self._take_group()
            try:
                running = self._submit(self._group, ops)
            except Exception as exc:  # the connection went away under us
                self._flushing = False
                self._fail(ops, BackendUnavailable(
                    f"the SQLite connection to {self.path} is closed ({exc!r})"))
            else:
                self._flusher = asyncio.create_task(
                    self._flush(ops, running), name="sitq-sqlite-writes"
                )
        return await future  # type: ignore[no-any-return]

    def _take_group(self) -> list[_Op]:
        ops, self._ops = self._ops[: self.max_group], self._ops[self.max_group :]
        return ops

    async def _flush(self, ops: list[_Op], running: asyncio.Future[Any]) -> None:
        """Finish the group in flight, then run waiting steps a group per transaction."""
        try:
            while True:
                await self._settle(ops, running)
                if not self._ops:
                    return
                ops = self._take_group()
                running = self._submit(self._group, ops)
        except Exception as exc:  # the connection closed while steps waited
            self._fail(self._ops, self.error(exc))
            self._ops = []
        finally:
            self._flushing = False

    async def _settle(self, ops: list[_Op], running: asyncio.Future[Any]) -> None:
        """Wait for a group's transaction and hand each step its outcome."""
        try:
            outcomes = await running
        except Exception as exc:
            self._fail(ops, self.error(exc))
            return
        for op, (ok, value) in zip(ops, outcomes, strict=True):
            if op.future.done():
                continue
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(self.error(value))

    @staticmethod
    def _fail(ops: list[_Op], exc: BaseException) -> None:
        for op in ops:
            if not op.future.done():
                op.future.set_exception(exc)

    def _group(self, conn: sqlite3.Connection, ops: list[_Op]) -> list[tuple[bool, Any]]:
        """One transaction for ``ops`` (on the connection thread); each step runs in a
        savepoint and its error is returned for that step alone. A busy error in the
        middle of a transaction (rare in WAL mode) rolls it back and runs it again."""
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                return self._group_once(conn, ops, max(deadline - time.monotonic(), 0.0))
            except sqlite3.OperationalError as exc:
                if isinstance(exc, LockTimeout) or not is_busy(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise LockTimeout(str(exc)) from exc
                log.debug("%s: busy inside a transaction (%s); running it again", self.path, exc)

    @staticmethod
    def _group_once(
        conn: sqlite3.Connection, ops: list[_Op], wait: float
    ) -> list[tuple[bool, Any]]:
        begin(conn, wait)
        try:
            now = time.time()
            if len(ops) == 1:
                out = [(True, ops[0].body(conn, now, *ops[0].args))]
                conn.execute("COMMIT")
                return out
            outcomes: list[tuple[bool, Any]] = []
            for op in ops:
                conn.execute("SAVEPOINT sitq_step")
                try:
                    value = op.body(conn, now, *op.args)
                except Exception as exc:
                    if is_busy(exc):
                        raise
                    conn.execute("ROLLBACK TO sitq_step")
                    conn.execute("RELEASE sitq_step")
                    outcomes.append((False, exc))
                    continue
                conn.execute("RELEASE sitq_step")
                outcomes.append((True, value))
            conn.execute("COMMIT")
            return outcomes
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ inline
    def inline_write(self, body: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
        """Run a write on the event loop if nothing of ours is in flight (order is kept)
        and the lock is free; ``(False, None)`` sends it to the thread instead."""
        conn = self.inline
        if conn is None or not self.inline_writes_allowed or self._flushing:
            return False, None
        try:
            out = transaction(conn, 0.0, body, *args)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return False, None
            raise self.error(exc) from exc
        except sqlite3.Error as exc:
            raise self.error(exc) from exc
        self._inline_writes += 1
        if self._inline_writes % INLINE_CHECKPOINT == 0:
            self._checkpoints.add(asyncio.ensure_future(self._checkpoint()))
        return True, out

    async def _checkpoint(self) -> None:
        try:
            await self.run(_checkpoint)
        except Exception as exc:  # pragma: no cover - the next one will do
            log.debug("checkpoint of %s failed: %s", self.path, exc)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._checkpoints.discard(task)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """A short read: on the event loop when possible, else on the thread."""
        conn = self.inline
        if conn is not None:
            try:
                return fn(conn, *args)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise self.error(exc) from exc
            except sqlite3.Error as exc:
                raise self.error(exc) from exc
        return await self.run(fn, *args)

