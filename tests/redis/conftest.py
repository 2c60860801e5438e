"""Redis test fixtures: the shared server, private servers started per test, a TCP proxy."""

from __future__ import annotations

import os

import pytest

from tests.conftest import require_server

REDIS_HOST = os.environ.get("SITQ_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("SITQ_TEST_REDIS_PORT", "6379"))


@pytest.fixture
def redis_url() -> str:
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
