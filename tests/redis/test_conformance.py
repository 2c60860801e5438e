"""RedisBackend passes the conformance suite against the shared Redis server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from sitq.testing import BackendConformance


class TestRedisBackend(BackendConformance):
    @pytest.fixture
    def backend_url(self, redis_url: str) -> str:
        return redis_url

    @pytest.fixture(autouse=True)
    def _drop_cron_ticks(self, redis_url: str, queue_name: str) -> Iterator[None]:
        """The suite's cron ticks are keyed by schedule name, not queue: delete them too."""
        yield
        client = redis.Redis.from_url(redis_url)
        try:
            for key in client.scan_iter(match=f"{{sitq:tick:sched-{queue_name}}}:*"):
                client.delete(key)
        finally:
            client.close()
