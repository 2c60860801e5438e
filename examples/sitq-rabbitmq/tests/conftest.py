"""Fixtures for sitq-rabbitmq's tests: the broker's URL, and a unique prefix per test.

The tests run against a real RabbitMQ (``SITQ_TEST_AMQP_URL``, default the local
guest/guest broker). When it is unreachable they skip, except with ``CI=true``, where an
unreachable broker is a failure.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

AMQP_URL = os.environ.get("SITQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def amqp_url() -> str:
    parts = urlsplit(AMQP_URL)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        message = f"RabbitMQ is not reachable at {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(f"{message}; CI=true, so an unreachable broker is a failure")
        pytest.skip(f"{message}; start it (rabbitmq-server -detached) to run these tests")
    return AMQP_URL


@pytest.fixture
def prefix() -> str:
    """Every queue and exchange a test declares starts with this (the broker is shared)."""
    return f"t{uuid.uuid4().hex[:10]}"
