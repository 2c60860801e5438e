"""PostgresBackend passes the conformance suite against the shared PostgreSQL server."""

from __future__ import annotations

import pytest

from sitq.testing import BackendConformance


class TestPostgresBackend(BackendConformance):
    @pytest.fixture
    def backend_url(self, postgres_url: str) -> str:
        return postgres_url

    @pytest.fixture
    def unreachable_backend_url(self, closed_port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{closed_port}/test"
