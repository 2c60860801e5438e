"""RabbitMQBackend passes sitq's conformance suite against a real broker."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from sitq.testing import BackendConformance


class TestRabbitMQBackend(BackendConformance):
    @pytest.fixture
    def backend_url(self, amqp_url: str, prefix: str) -> str:
        return f"{amqp_url}?prefix={prefix}"

    @pytest.fixture
    def backend_options(self) -> dict[str, Any]:
        # Record queues of finished jobs outlive their result by at most a minute; a
        # short default TTL keeps what the suite leaves on the shared broker short-lived.
        return {"result_ttl": 60.0}

    @pytest.fixture
    def unreachable_backend_url(self, prefix: str) -> str:
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"amqp://guest:guest@127.0.0.1:{port}/?prefix={prefix}"
