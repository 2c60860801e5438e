"""The conformance suite against a real 3-node Redis Cluster started on loopback ports.

Every key of one queue carries the hash tag ``{sitq:<queue>}`` so its scripts run on one
slot; this checks that nothing needs two slots at once (claims, finishes, lookups by id,
result notifications, cron ticks, purge of every queue).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sitq.testing import BackendConformance
from tests.redis._servers import RedisCluster3, free_cluster_port, redis_server_binary


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3]:
    redis_server_binary()
    cluster = RedisCluster3(Path(tmp_path_factory.mktemp("cluster")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
class TestRedisCluster(BackendConformance):
    @pytest.fixture
    def backend_url(self, cluster: RedisCluster3) -> str:
        return cluster.url  # cluster mode is detected from the server (cluster=auto)

    @pytest.fixture
    def unreachable_backend_url(self) -> str:
        return f"redis://127.0.0.1:{free_cluster_port()}/0?cluster=true"

    async def test_queues_spread_over_nodes(self, backend_url: str) -> None:
        from sitq_redis import RedisBackend

        async with RedisBackend.from_url(backend_url) as backend:
            client = backend._client
            nodes = {client.get_node_from_key(backend._k(f"q{i}").ready).name
                     for i in range(30)}
            assert backend._is_cluster
            assert len(nodes) == 3
