"""Group commit: steps that arrive together share one transaction, and fail alone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from sitq import BackendError
from sitq.testing import make_job
from sitq_sqlite import SQLiteBackend

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def _broken_step(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("INSERT INTO sitq_jobs (id) VALUES ('half-a-row')")  # NOT NULL columns


async def test_a_failing_step_rolls_back_alone(tmp_path: Path) -> None:
    async with SQLiteBackend(str(tmp_path / "g.db")) as backend:
        before, after = make_job("q"), make_job("q")
        commits = 0
        store = backend.store
        real_group = store._group

        def counting_group(conn: sqlite3.Connection, ops: list) -> list:
            nonlocal commits
            commits += 1
            return real_group(conn, ops)

        store._group = counting_group  # type: ignore[method-assign]
        # The first step goes to the connection thread at once; the ones that arrive while
        # it runs share the next transaction.
        outcomes = await asyncio.gather(
            backend.enqueue(make_job("q")), backend.enqueue(before),
            store.write(_broken_step), backend.enqueue(after), return_exceptions=True,
        )
        outcomes = outcomes[1:]
        assert outcomes[0] == before.id and outcomes[2] == after.id
        assert isinstance(outcomes[1], BackendError)
        assert "NOT NULL constraint failed" in str(outcomes[1])
        assert commits == 2, "the three later steps should have shared one transaction"
        claimed = await backend.claim(["q"], limit=10, lease=30, worker="w")
        assert [j.id for j in claimed][1:] == [before.id, after.id]
        assert await backend.get_job("half-a-row") is None


async def test_claims_and_finishes_share_transactions(tmp_path: Path) -> None:
    async with SQLiteBackend(str(tmp_path / "g.db")) as backend:
        await backend.enqueue_many([make_job("q") for _ in range(20)])
        first = await backend.claim(["q"], limit=10, lease=30, worker="w")
        from sitq.backend import Finish

        finished, second = await asyncio.gather(
            backend.finish_many([Finish(j, "success", b"r") for j in first]),
            backend.claim(["q"], limit=10, lease=30, worker="w"),
        )
        assert finished == [True] * 10
        assert len(second) == 10 and not {j.id for j in second} & {j.id for j in first}
        assert all([await backend.get_result(j.id) == b"r" for j in first])


async def test_a_single_enqueue_waits_for_another_process_lock(tmp_path: Path) -> None:
    """A small step runs on the event loop only while the lock is free; when another
    process holds it, the step waits on the connection thread instead of failing."""
    path = tmp_path / "g.db"
    async with SQLiteBackend(str(path)) as backend:
        quick = make_job("q")
        assert await backend.enqueue(quick) == quick.id  # inline: nothing holds the lock
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        job = make_job("q")
        pending = asyncio.create_task(backend.enqueue(job))
        await asyncio.sleep(0.3)
        assert not pending.done(), "the enqueue should wait for the other writer"
        other.execute("COMMIT")
        other.close()
        assert await asyncio.wait_for(pending, 10) == job.id
        claimed = await backend.claim(["q"], limit=10, lease=30, worker="w")
        assert [j.id for j in claimed] == [quick.id, job.id]
        assert await backend.get_job(job.id) is not None
