"""PostgreSQL test fixtures: the shared server with a schema of this test run's own."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import require_server

PG_HOST = os.environ.get("SITQ_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SITQ_TEST_PG_PORT", "5432"))
PG_BASE = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_BASE)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str]:
    """A schema of this test run's own on the shared server (database ``test``), dropped
    at the end: parallel runs never see each other's tables."""
    schema = f"sitq_t_{uuid.uuid4().hex[:12]}"
    yield schema
    try:
        asyncio.run(_drop_schema(schema))
    except OSError:
        pass  # the server is gone: nothing to drop


@pytest.fixture
def postgres_url(postgres_schema: str) -> str:
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    return f"{PG_BASE}?schema={postgres_schema}"


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
