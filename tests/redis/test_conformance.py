"""RedisBackend passes the conformance suite against the shared Redis server."""

from __future__ import annotations

import pytest

from sitq.testing import BackendConformance


class TestRedisBackend(BackendConformance):
    @pytest.fixture
    def backend_url(self, redis_url: str) -> str:
        return redis_url
