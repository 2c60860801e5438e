"""The Backend base class does the bookkeeping its storage steps rely on (sitq/backend.py):
the result TTL handed to each step, stats filtered by queue, eta normalisation, the
``connection=`` path to ``_enqueue_in_transaction``, and a failed connect closing what it
opened. Backends in the repo are checked by the conformance suite; these tests pin the
base class itself, with small subclasses of the memory backend."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from sitq import BackendUnavailable, NotSupported, TaskQueue
from sitq.backend import DEFAULT_RESULT_TTL, Finish
from sitq.backends.memory import MemoryBackend
from sitq.job import Job
from sitq.testing import make_job, tasks

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


class Recording(MemoryBackend):
    """A memory backend that records what reaches its storage steps."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.finished: list[Finish] = []
        self.cancel_ttls: list[float] = []
        self.enqueued: list[Job] = []

    async def _enqueue(self, jobs: list[Job]) -> list[str]:
        self.enqueued += jobs
        return await super()._enqueue(jobs)

    async def _finish(self, items: list[Finish]) -> list[bool]:
        self.finished += items
        return await super()._finish(items)

    async def _cancel(self, job_id: str, result: bytes, ttl: float) -> Any:
        self.cancel_ttls.append(ttl)
        return await super()._cancel(job_id, result, ttl)


class Transactional(MemoryBackend):
    """Joins the caller's 'transaction': a list that stands in for a driver connection."""

    supports_transactions: ClassVar[bool] = True

    async def _enqueue_in_transaction(self, jobs: list[Job], connection: Any) -> list[str]:
        connection.extend(jobs)
        return [job.id for job in jobs]


def _name() -> str:
    return f"tpl-{uuid.uuid4().hex[:8]}"


async def test_each_result_step_gets_the_effective_ttl() -> None:
    backend = Recording(_name(), result_ttl=60)
    q = "ttl"
    own, default, failing = (make_job(q, result_ttl=5.0), make_job(q), make_job(q))
    await backend.enqueue_many([own, default, failing])
    claimed = {j.id: j for j in await backend.claim([q], limit=3)}
    await backend.finish_many([Finish(claimed[own.id], "success", b"a"),
                               Finish(claimed[default.id], "success", b"b")])
    await backend.fail(claimed[failing.id], b"c")
    assert [item.ttl for item in backend.finished] == [5.0, 60.0, 60.0]
    queued_own, queued_default = make_job(q, result_ttl=7.0), make_job(q)
    await backend.enqueue_many([queued_own, queued_default])
    assert await backend.cancel(queued_own.id, b"x") == "cancelled"
    assert await backend.cancel(queued_default.id, b"x") == "cancelled"
    assert await backend.cancel("no-such-job", b"x") == "not_found"
    assert backend.cancel_ttls == [7.0, 60.0, 60.0]
    assert MemoryBackend().result_ttl == DEFAULT_RESULT_TTL


async def test_stats_returns_exactly_the_queues_asked_for() -> None:
    backend = MemoryBackend(_name())
    await backend.enqueue(make_job("busy"))
    stats = await backend.stats(["busy", "empty"])
    assert list(stats) == ["busy", "empty"]
    assert (stats["busy"].queued, stats["empty"].queued) == (1, 0)
    assert "empty" not in await backend.stats()


async def test_eta_and_ticks_reach_the_steps_in_utc() -> None:
    backend = Recording(_name())
    berlin = timezone(timedelta(hours=1))
    job = make_job("eta", eta=datetime(2030, 1, 1, 10, tzinfo=berlin))
    await backend.enqueue(job)
    [stored] = backend.enqueued
    assert stored.eta == datetime(2030, 1, 1, 9, tzinfo=UTC) and stored.eta.tzinfo is UTC
    with pytest.raises(ValueError, match="eta"):
        await backend.enqueue(make_job("eta", eta=datetime(2030, 1, 1)))
    with pytest.raises(ValueError, match="tick"):
        await backend.claim_tick("report", datetime(2030, 1, 1))


async def test_connection_goes_to_the_transaction_step_on_every_path() -> None:
    backend = Transactional(_name())
    tx: list[Job] = []
    async with TaskQueue(backend) as queue:
        bound = queue.options(queue="tx", connection=tx)
        one = await bound.enqueue(tasks.add, 1, 2)
        many = await bound.enqueue_many(tasks.add, [(1, 2), (3, 4)])
        async with bound.batch() as batch:
            batch.enqueue(tasks.noop)
            with pytest.raises(ValueError, match=r"connection= to queue\.options"):
                batch.options(connection=tx)
        assert [j.id for j in tx] == [one, *many, *batch.ids]
        # Nothing went around the caller's transaction into the store itself.
        assert (await queue.stats(["tx"]))["tx"].queued == 0
        plain = await queue.options(queue="tx").enqueue(tasks.noop)
        assert plain not in [j.id for j in tx]
        assert (await queue.stats(["tx"]))["tx"].queued == 1


async def test_connection_is_refused_without_the_capability() -> None:
    async with TaskQueue(f"memory://{_name()}") as queue:
        with pytest.raises(NotSupported, match=r"supports_transactions = False.*connection="):
            await queue.options(connection=object()).enqueue(tasks.noop)
        assert await queue.stats() == {}


class HalfOpen(MemoryBackend):
    """Starts a background task, then fails to connect."""

    helper: asyncio.Task[None] | None = None

    async def _connect(self) -> None:
        self.helper = asyncio.ensure_future(asyncio.sleep(3600))
        raise BackendUnavailable("the store went away half-way through connecting")

    async def _close(self) -> None:
        if self.helper is not None:
            self.helper.cancel()
            await asyncio.gather(self.helper, return_exceptions=True)


async def test_a_failed_connect_runs_close() -> None:
    backend = HalfOpen(_name())
    with pytest.raises(BackendUnavailable):
        await backend.connect()
    assert not backend.connected
    assert backend.helper is not None and backend.helper.cancelled()
