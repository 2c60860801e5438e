"""One pub/sub connection per backend, shared by every waiter.

``get_result(timeout=...)`` subscribes to the job's ``done`` channel (the finishing
script publishes the stored result bytes on it) and idle workers to their queues'
``new`` channels (the enqueue script publishes when a queue goes from empty to
non-empty). A single reader task dispatches messages to listeners; a subscription is
confirmed by the server before :meth:`Notifier.add` returns, so a caller that checks the
store *after* ``add`` cannot miss a notification.

When the connection drops the reader reconnects with backoff, subscribes again to every
channel that still has listeners, and calls every listener with ``None`` ("something may
have happened while we were away"): waiters re-check the store.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("sitq.redis")

Listener = Callable[[bytes | None], None]


class Notifier:
    ping_interval = 5.0

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect
        self._last = 0.0
        self._conn: Any = None
        self._listeners: dict[bytes, list[Listener]] = {}
        self._pending: dict[bytes, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._closed = False

    async def add(
        self, channel: bytes, listener: Listener, timeout: float | None
    ) -> bool:
        """Start calling ``listener`` for messages on ``channel``; True once the
        subscription is confirmed, False if that took longer than ``timeout``."""
        listeners = self._listeners.setdefault(channel, [])
        listeners.append(listener)
        if len(listeners) > 1 and channel not in self._pending:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._pending.setdefault(channel, [])
        waiting.append(fut)
        self._start()
        if len(waiting) == 1 and self._conn is not None:
            try:
                await self._conn.send_command("SUBSCRIBE", channel)
            except Exception as exc:  # the reader reconnects and subscribes again
                log.debug("subscribe to %r failed: %s", channel, exc)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except TimeoutError:
            return False

    def remove(self, channel: bytes, listener: Listener) -> None:
        listeners = self._listeners.get(channel)
        if not listeners:
            return
        try:
            listeners.remove(listener)
        except ValueError:
            return
        if not listeners:
            del self._listeners[channel]
            waiting = self._pending.pop(channel, [])
            for fut in waiting:
                if not fut.done():
                    fut.cancel()
            if self._conn is not None and self._task is not None:
                task = self._task.get_loop().create_task(self._unsubscribe(channel))
                self._chores.add(task)  # keep a reference until it is done
                task.add_done_callback(self._chores.discard)

    async def _unsubscribe(self, channel: bytes) -> None:
        if channel in self._listeners or self._conn is None:
            return
        try:
            await self._conn.send_command("UNSUBSCRIBE", channel)
        except Exception:
            pass

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._closed = False
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="sitq-redis-notifier"
            )

    async def _run(self) -> None:
        failures = 0
        while not self._closed:
            try:
                self._conn = await self._connect()
                channels = list(self._listeners)
                if channels:
                    await self._conn.send_command("SUBSCRIBE", *channels)
                if failures:
                    log.info("pub/sub connection re-established")
                    self._wake_all()
                failures = 0
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(0.05 * 2**failures, 5.0) * (0.5 + random.random() / 2)
                log.warning("pub/sub connection lost (%s); reconnecting in %.2fs", exc, delay)
                await self._drop()
                self._wake_all()
                await asyncio.sleep(delay)

    async def _read(self) -> None:
        conn = self._conn
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        watchdog = loop.create_task(self._watch(conn))
        try:
            while True:
                msg = await conn.read_response()
                self._last = loop.time()
                kind = msg[0]
                if kind == b"message":
                    for listener in list(self._listeners.get(msg[1], ())):
                        listener(msg[2])
                elif kind == b"subscribe":
                    for fut in self._pending.pop(msg[1], ()):
                        if not fut.done():
                            fut.set_result(None)
        finally:
            watchdog.cancel()

    async def _watch(self, conn: Any) -> None:
        """PING an idle connection; drop one that stopped answering (half-open)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval)
            idle = loop.time() - self._last
            if idle > 3 * self.ping_interval:
                log.warning("pub/sub connection silent for %.0fs; reconnecting", idle)
                await conn.disconnect(nowait=True)
                return
            if idle >= self.ping_interval:
                try:
                    await conn.send_command("PING")
                except Exception:
                    return

    def _wake_all(self) -> None:
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                listener(None)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.disconnect()
            except Exception:
                pass

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._drop()
        for waiting in self._pending.values():
            for fut in waiting:
                if not fut.done():
                    fut.cancel()
        self._pending.clear()
