"""Transactional enqueue: a job enqueued through the caller's connection exists only if
the caller's transaction commits (docs/backends/postgres.md, "Enqueue inside your
transaction")."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from sitq import TaskQueue, Worker
from sitq.errors import ConfigurationError
from sitq.testing import tasks
from sitq_postgres import PostgresBackend

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


class _Rollback(Exception):
    pass


@pytest.fixture
async def queue(postgres_url: str) -> AsyncIterator[TaskQueue]:
    backend = PostgresBackend(postgres_url)
    async with TaskQueue(backend) as queue:
        yield queue


@pytest.fixture
async def conn(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_url.split("?")[0])
    try:
        yield connection
    finally:
        await connection.close()


async def test_rollback_leaves_no_job(
    queue: TaskQueue, conn: asyncpg.Connection, unique: str
) -> None:
    name = f"tx-{unique}"
    with pytest.raises(_Rollback):
        async with conn.transaction():
            job_id = await queue.options(connection=conn, queue=name).enqueue(tasks.add, 1, 2)
            ids = await queue.options(connection=conn, queue=name).enqueue_many(
                tasks.add, [(1, 2), (3, 4)]
            )
            # Inside the transaction the job is there; outside it is not (yet).
            assert await conn.fetchval(
                f"SELECT count(*) FROM {queue.backend.schema}.jobs WHERE queue = $1", name
            ) == 3
            assert await queue.backend.get_job(job_id) is None
            raise _Rollback
    for i in (job_id, *ids):
        assert await queue.backend.get_job(i) is None
    assert (await queue.stats([name]))[name].queued == 0


async def test_commit_makes_it_run(
    queue: TaskQueue, conn: asyncpg.Connection, unique: str
) -> None:
    name = f"tx-{unique}"
    async with Worker(queue.backend, queues=[name], handle_signals=False):
        async with conn.transaction():
            job_id = await queue.options(connection=conn, queue=name).enqueue(tasks.add, 2, 3)
            assert await queue.get_result(job_id, timeout=0.3) is None  # not committed yet
        result = await queue.get_result(job_id, timeout=15)
    assert result is not None and result.unwrap() == 5


async def test_idempotency_key_inside_the_transaction(
    queue: TaskQueue, conn: asyncpg.Connection, unique: str
) -> None:
    name = f"tx-{unique}"
    bound = queue.options(connection=conn, queue=name, key=f"k-{unique}")
    async with conn.transaction():
        first = await bound.enqueue(tasks.add, 1, 1)
        assert await bound.enqueue(tasks.add, 1, 1) == first
    assert await queue.options(queue=name, key=f"k-{unique}").enqueue(tasks.add, 1, 1) == first
    await queue.backend.purge([name])


async def test_a_connection_outside_a_transaction_is_refused(
    queue: TaskQueue, conn: asyncpg.Connection, unique: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"conn\.transaction\(\)"):
        await queue.options(connection=conn, queue=f"tx-{unique}").enqueue(tasks.noop)
