"""Shared fixtures: server reachability (skip on a laptop, fail in CI) and unique names."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_server(name: str, host: str, port: int) -> None:
    """Skip (or, with CI=true, fail) when ``host:port`` does not accept connections."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(f"{message}; CI=true, so an unreachable server is a failure")
        pytest.skip(f"{message}; start it to run these tests")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


def pytest_report_header() -> str:
    """Names the installed version of every backend driver (see tests/matrix/drivers.py)."""
    import sqlite3
    from importlib.metadata import PackageNotFoundError, version

    from tests.matrix.drivers import ROWS

    found = [f"sqlite3 (SQLite {sqlite3.sqlite_version})"]
    for row in ROWS:
        try:
            found.append(f"{row.driver} {version(row.driver)}")
        except PackageNotFoundError:
            found.append(f"{row.driver} not installed")
    return "drivers: " + ", ".join(found)
