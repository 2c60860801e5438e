"""RedisBackend passes the conformance suite against the shared Redis server."""

from __future__ import annotations

import pytest

from sitq.testing import BackendConformance
from tests.redis._servers import free_port


class TestRedisBackend(BackendConformance):
    @pytest.fixture
    def backend_url(self, redis_url: str) -> str:
        return redis_url

    @pytest.fixture
    def unreachable_backend_url(self) -> str:
        return f"redis://127.0.0.1:{free_port()}/0"
