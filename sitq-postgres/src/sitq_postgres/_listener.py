"""The backend's one LISTEN connection: it wakes idle workers and result waiters.

A supervisor task owns the connection. It connects, LISTENs on the channels asked for,
pings the server every ``keepalive`` seconds (so a connection that went silent is
noticed), and reconnects with back-off when the connection is lost. Every (re)connect
and every loss wakes all waiters: a notification sent while nobody listened is gone for
good, so they look at the store again. While it is down, :attr:`Listener.up` is False
and waiters poll instead.

Waiters never touch the connection; a notification resolves their futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["Listener"]

log = logging.getLogger("sitq.postgres")


class Listener:
    """Notifications of one schema's two channels (see ``_sql``), for one backend."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        jobs_channel: str,
        done_channel: str,
        *,
        keepalive: float = 15.0,
        where: str = "",
    ) -> None:
        self._connect = connect
        self.jobs_channel = jobs_channel
        self.done_channel = done_channel
        self.keepalive = keepalive
        self.where = where
        #: True while connected and listening on every channel asked for.
        self.up = False
        #: Job notifications received (any queue), and the count at each queue's last one.
        self.seq = 0
        self.last: dict[str, int] = {}
        self._want: set[str] = set()
        self._active: set[str] = set()
        self._job_waiters: dict[asyncio.Future[None], frozenset[str]] = {}
        self._result_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._ready = asyncio.Event()
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ channels
    async def listen(self, channel: str, wait: float) -> bool:
        """Listen on ``channel`` from now on. True once the LISTEN is active; False if
        the connection is down (waiters then poll), after at most ``wait`` seconds."""
        if self._closed:
            return False
        if channel in self._active and self.up:
            return True
        self._want.add(channel)
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="sitq-postgres-listener")
        if not self._ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait)
        async with self._lock:
            conn = self._conn
            if conn is None or not self.up:
                return False
            if channel not in self._active:
                try:
                    await conn.add_listener(channel, self._on_notification)
                except Exception as exc:  # the connection broke: the supervisor reconnects
                    log.debug("LISTEN %s failed: %s", channel, exc)
                    self._lost.set()
                    return False
                self._active.add(channel)
            return True

    # ------------------------------------------------------------------ waiters
    def job_waiter(self, queues: Iterable[str]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._job_waiters[fut] = frozenset(queues)
        return fut

    def drop_job_waiter(self, fut: asyncio.Future[None]) -> None:
        self._job_waiters.pop(fut, None)

    def result_waiter(self, job_id: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._result_waiters.setdefault(job_id, set()).add(fut)
        return fut

    def drop_result_waiter(self, job_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._result_waiters.get(job_id)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                del self._result_waiters[job_id]

    def notified_since(self, mark: int, queues: Iterable[str]) -> bool:
        """Did a job notification for one of ``queues`` arrive after ``seq`` was ``mark``?"""
        last = self.last
        return any(last.get(q, -1) > mark for q in queues)

    def _on_notification(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == self.jobs_channel:
            self.seq += 1
            self.last[payload] = self.seq
            for fut, queues in self._job_waiters.items():
                if payload in queues and not fut.done():
                    fut.set_result(None)
        elif channel == self.done_channel:
            waiters = self._result_waiters
            for job_id in payload.split(","):
                for fut in waiters.get(job_id, ()):
                    if not fut.done():
                        fut.set_result(None)

    def _wake_all(self) -> None:
        self.seq += 1
        for queue in list(self.last):
            self.last[queue] = self.seq
        for fut in self._job_waiters:
            if not fut.done():
                fut.set_result(None)
        for futs in self._result_waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)

    # ------------------------------------------------------------------ the connection
    def _on_terminated(self, _conn: Any) -> None:
        self._lost.set()

    async def _supervise(self) -> None:
        delay = 0.05
        while not self._closed:
            conn: Any = None
            try:
                conn = await self._connect()
                conn.add_termination_listener(self._on_terminated)
                self._lost.clear()
                async with self._lock:
                    for channel in sorted(self._want):
                        await conn.add_listener(channel, self._on_notification)
                    self._conn, self._active = conn, set(self._want)
                    self.up = True
                self._ready.set()
                if delay > 0.05:
                    log.info("listening for notifications again on %s", self.where)
                delay = 0.05
                self._wake_all()  # what was sent while nobody listened is lost: look again
                while not self._lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), self.keepalive)
                    if not self._lost.is_set():
                        async with self._lock:
                            await conn.fetchval("SELECT 1", timeout=self.keepalive)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("notification connection to %s lost (%s); waiters poll until it "
                            "is back", self.where, exc or type(exc).__name__)
            finally:
                self.up = False
                self._conn, self._active = None, set()
                if conn is not None:
                    conn.terminate()
            self._wake_all()
            # Let the first waiters through (they poll) instead of waiting for a server
            # that is down.
            self._ready.set()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        """Stop the supervisor and close the connection; waiters wake and return."""
        self._closed = True
        task, self._task = self._task, None
        conn = self._conn
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if conn is not None and not conn.is_closed():
            conn.terminate()
        self._wake_all()
