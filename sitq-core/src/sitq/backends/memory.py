"""MemoryBackend: an in-process store for tests, demos and examples.

``memory://`` gives a fresh store; ``memory://NAME`` gives the store called NAME in this
process, so a ``TaskQueue("memory://app")`` and a ``Worker("memory://app")`` in one
process share it. It is thread-safe (a ``SyncTaskQueue`` and a worker may run on
different event loops) but not shared between processes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..backend import Backend, CancelOutcome, Finish, LeaseState, QueueStats
from ..job import Job

__all__ = ["MemoryBackend"]

_named: dict[str, _Store] = {}
_named_lock = threading.Lock()


class _Waiters:
    """Futures of any event loop, woken thread-safely."""

    def __init__(self) -> None:
        self._items: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def add(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._items.append((loop, fut))
        return fut

    def discard(self, fut: asyncio.Future[None]) -> None:
        self._items = [item for item in self._items if item[1] is not fut]

    def __bool__(self) -> bool:
        return bool(self._items)

    def wake(self) -> None:
        items, self._items = self._items, []
        for loop, fut in items:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.dead: dict[str, Job] = {}
        #: job id -> (result bytes, expiry, queue)
        self.results: dict[str, tuple[bytes, float, str]] = {}
        #: (queue, idempotency key) -> id of the live job holding it
        self.keys: dict[tuple[str, str], str] = {}
        #: claimed cron ticks: (queue, schedule name, tick timestamp)
        self.ticks: set[tuple[str, str, float]] = set()
        self.ready: dict[str, list[tuple[int, float, int, str]]] = {}
        self.scheduled: dict[str, list[tuple[float, int, str]]] = {}
        self.entry: dict[str, int] = {}
        self.seq = itertools.count()
        self.job_waiters = _Waiters()
        self.result_waiters: dict[str, _Waiters] = {}
        self.next_sweep = 0.0


def _ts(value: datetime | None) -> float:
    return 0.0 if value is None else value.timestamp()


class MemoryBackend(Backend):
    """In-process backend. See the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    supports_notifications: ClassVar[bool] = True
    supports_multiprocess: ClassVar[bool] = False
    supports_dead_letters: ClassVar[bool] = True
    #: At most this often (seconds), finishing a job also drops expired results and dead
    #: letters, so a long-lived store does not keep them forever.
    sweep_interval: float = 1.0

    def __init__(self, name: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.name = name
        if name:
            with _named_lock:
                self._s = _named.setdefault(name, _Store())
        else:
            self._s = _Store()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        parts = urlsplit(url)
        name = (parts.netloc + parts.path).strip("/") or None
        return cls(name, url=url, **options)

    def _now(self) -> float:
        return time.time()

    async def _connect(self) -> None:
        pass

    async def _close(self) -> None:
        pass

    # ------------------------------------------------------------------ internals
    def _push(self, job: Job) -> None:
        s = self._s
        seq = next(s.seq)
        s.entry[job.id] = seq
        eta = _ts(job.eta)
        if eta > self._now():
            heapq.heappush(s.scheduled.setdefault(job.queue, []), (eta, seq, job.id))
        else:
            order = eta or _ts(job.created_at)
            heapq.heappush(s.ready.setdefault(job.queue, []), (-job.priority, order, seq, job.id))

    def _live(self, job_id: str, seq: int) -> Job | None:
        job = self._s.jobs.get(job_id)
        if job is None or job.state != "queued" or self._s.entry.get(job_id) != seq:
            return None
        return job

    def _promote(self, queue: str, now: float) -> None:
        sched = self._s.scheduled.get(queue)
        while sched and sched[0][0] <= now:
            _, seq, job_id = heapq.heappop(sched)
            job = self._live(job_id, seq)
            if job is not None:
                self._push(job)

    def _end(self, job: Job) -> None:
        s = self._s
        s.jobs.pop(job.id, None)
        s.entry.pop(job.id, None)
        if job.key is not None and s.keys.get((job.queue, job.key)) == job.id:
            del s.keys[job.queue, job.key]

    def _expire(self, job_id: str, now: float) -> bool:
        """Drop ``job_id``'s result and dead letter if the result has expired; True if so."""
        entry = self._s.results.get(job_id)
        if entry is None or entry[1] > now:
            return False
        del self._s.results[job_id]
        self._s.dead.pop(job_id, None)
        return True

    def _sweep(self, now: float) -> None:
        s = self._s
        if now < s.next_sweep:
            return
        s.next_sweep = now + self.sweep_interval
        for job_id in [j for j, (_, expires, _q) in s.results.items() if expires <= now]:
            self._expire(job_id, now)

    def _store_result(self, job: Job, data: bytes, ttl: float) -> None:
        self._s.results[job.id] = (data, self._now() + ttl, job.queue)
        waiters = self._s.result_waiters.pop(job.id, None)
        if waiters is not None:
            waiters.wake()

    # ------------------------------------------------------------------ storage steps
    async def _enqueue(self, jobs: list[Job]) -> list[str]:
        s = self._s
        ids = []
        with s.lock:
            for job in jobs:
                if job.key is not None and (job.queue, job.key) in s.keys:
                    ids.append(s.keys[job.queue, job.key])
                    continue
                stored = replace(job, state="queued", headers=dict(job.headers))
                s.jobs[job.id] = stored
                if job.key is not None:
                    s.keys[job.queue, job.key] = job.id
                self._push(stored)
                ids.append(job.id)
            s.job_waiters.wake()
        return ids

    async def _claim(self, queues: list[str], limit: int, lease: float, worker: str) -> list[Job]:
        s = self._s
        now = self._now()
        out: list[Job] = []
        with s.lock:
            wanted = set(queues)
            for job in s.jobs.values():
                if len(out) >= limit:
                    break
                if (
                    job.state == "running"
                    and job.queue in wanted
                    and job.lease_until is not None
                    and job.lease_until.timestamp() <= now
                ):
                    job.lease_expiries += 1
                    out.append(job)
            for queue in queues:
                self._promote(queue, now)
            while len(out) < limit:
                best: tuple[tuple[int, float, int, str], str] | None = None
                for queue in queues:
                    heap = s.ready.get(queue)
                    while heap and self._live(heap[0][3], heap[0][2]) is None:
                        heapq.heappop(heap)
                    if heap and (best is None or heap[0] < best[0]):
                        best = (heap[0], queue)
                if best is None:
                    break
                heapq.heappop(s.ready[best[1]])
                out.append(s.jobs[best[0][3]])
            started = datetime.fromtimestamp(now, UTC)
            until = datetime.fromtimestamp(now + lease, UTC)
            for job in out:
                job.attempt += 1
                job.state = "running"
                job.lease_until = until
                job.worker = worker
                job.started_at = started
                s.entry.pop(job.id, None)
            return [replace(job, headers=dict(job.headers)) for job in out]

    async def _extend(self, jobs: list[Job], lease: float) -> list[LeaseState]:
        s = self._s
        until = datetime.fromtimestamp(self._now() + lease, UTC)
        states: list[LeaseState] = []
        with s.lock:
            for job in jobs:
                stored = s.jobs.get(job.id)
                if stored is None or stored.state != "running" or stored.attempt != job.attempt:
                    states.append("lost")
                    continue
                stored.lease_until = until
                states.append("cancel" if stored.cancel_requested else "ok")
        return states

    async def _finish(self, items: list[Finish]) -> list[bool]:
        s = self._s
        now = self._now()
        out = []
        with s.lock:
            for item in items:
                job = item.job
                stored = s.jobs.get(job.id)
                if stored is None or stored.state != "running" or stored.attempt != job.attempt:
                    out.append(False)
                    continue
                out.append(True)
                if item.outcome in ("retry", "release"):
                    stored.state = "queued"
                    stored.failures = job.failures
                    stored.lease_until = None
                    stored.worker = None
                    stored.eta = (
                        datetime.fromtimestamp(now + item.retry_delay, UTC)
                        if item.outcome == "retry"
                        else None
                    )
                    self._push(stored)
                    continue
                assert item.result is not None
                self._end(stored)
                if item.outcome == "failed":
                    stored.state = "failed"
                    stored.failures = job.failures
                    s.dead[job.id] = stored
                self._store_result(stored, item.result, item.ttl)
            self._sweep(now)
            s.job_waiters.wake()
        return out

    async def _get_result(self, job_id: str) -> bytes | None:
        with self._s.lock:
            if self._expire(job_id, self._now()):
                return None
            entry = self._s.results.get(job_id)
            return None if entry is None else entry[0]

    async def _wait_result(self, job_id: str, timeout: float | None) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._s.lock:
                data = await self._get_result(job_id)
                if data is not None:
                    return data
                waiters = self._s.result_waiters.setdefault(job_id, _Waiters())
                fut = waiters.add()
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                if remaining is not None and remaining <= 0:
                    return None
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                return await self._get_result(job_id)
            finally:
                with self._s.lock:
                    waiters.discard(fut)
                    # Forget the id once nobody waits for it (an unknown or slow job).
                    if not waiters and self._s.result_waiters.get(job_id) is waiters:
                        del self._s.result_waiters[job_id]

    async def _wait_for_jobs(self, queues: list[str], timeout: float) -> None:
        with self._s.lock:
            fut = self._s.job_waiters.add()
            # Wake when the earliest scheduled job (an ETA or a retry back-off) is due,
            # not only on the next enqueue or after the whole timeout.
            etas = [heap[0][0] for q in queues if (heap := self._s.scheduled.get(q))]
            if etas:
                timeout = max(0.0, min(timeout, min(etas) - self._now()))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            with self._s.lock:
                self._s.job_waiters.discard(fut)

    async def _get_job(self, job_id: str) -> Job | None:
        with self._s.lock:
            self._expire(job_id, self._now())
            job = self._s.jobs.get(job_id) or self._s.dead.get(job_id)
            return None if job is None else replace(job, headers=dict(job.headers))

    async def _cancel(self, job_id: str, result: bytes, ttl: float) -> CancelOutcome:
        s = self._s
        with s.lock:
            job = s.jobs.get(job_id)
            if job is None:
                self._expire(job_id, self._now())
                return "finished" if job_id in s.results else "not_found"
            if job.state == "running":
                job.cancel_requested = True
                return "requested"
            self._end(job)
            self._store_result(job, result, ttl)
            return "cancelled"

    async def _stats(self, queues: list[str] | None) -> dict[str, QueueStats]:
        now = self._now()
        out: dict[str, QueueStats] = {}
        with self._s.lock:
            for job in self._s.jobs.values():
                st = out.setdefault(job.queue, QueueStats())
                if job.state == "running":
                    st.running += 1
                elif job.eta is not None and job.eta.timestamp() > now:
                    st.scheduled += 1
                else:
                    st.queued += 1
            for job in list(self._s.dead.values()):
                if not self._expire(job.id, now):
                    out.setdefault(job.queue, QueueStats()).failed += 1
        return out

    async def _purge(self, queues: list[str] | None) -> int:
        s = self._s

        def doomed(queue: str) -> bool:
            return queues is None or queue in queues

        with s.lock:
            jobs = [j for j in s.jobs.values() if doomed(j.queue)]
            for job in jobs:
                self._end(job)
            dead = [j for j in s.dead.values() if doomed(j.queue)]
            for job in dead:
                del s.dead[job.id]
            for job_id in [j for j, entry in s.results.items() if doomed(entry[2])]:
                del s.results[job_id]
            s.ticks = {t for t in s.ticks if not doomed(t[0])}
            for heaps in (s.ready, s.scheduled):
                for queue in [q for q in heaps if doomed(q)]:
                    del heaps[queue]
            return len(jobs) + len(dead)

    async def _claim_tick(self, name: str, tick: datetime, queue: str) -> bool:
        with self._s.lock:
            key = (queue, name, tick.timestamp())
            if key in self._s.ticks:
                return False
            self._s.ticks.add(key)
            return True

    async def _dead_letters(self, queue: str, limit: int) -> list[Job]:
        now = self._now()
        with self._s.lock:
            jobs = [j for j in list(self._s.dead.values())
                    if j.queue == queue and not self._expire(j.id, now)]
        return [replace(j) for j in jobs[:limit]]

    async def _requeue(self, job_id: str) -> bool:
        s = self._s
        with s.lock:
            job = s.dead.pop(job_id, None)
            if job is None:
                return False
            s.results.pop(job_id, None)
            job.state = "queued"
            job.failures = 0
            job.lease_expiries = 0
            job.eta = None
            job.cancel_requested = False
            s.jobs[job.id] = job
            if job.key is not None:
                s.keys.setdefault((job.queue, job.key), job.id)
            self._push(job)
            s.job_waiters.wake()
            return True
