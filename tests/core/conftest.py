"""Fixtures for core tests: in-process ``memory://NAME`` stores, a queue, a running worker."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from sitq import TaskQueue, Worker


@pytest.fixture(autouse=True)
def _clean_sitq_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Core tests must not pick up SITQ_* settings from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("SITQ_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def mem_url() -> str:
    """A fresh in-process store, shared by name between queue and worker."""
    return f"memory://t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def queue(mem_url: str) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(mem_url) as q:
        yield q


@pytest.fixture
def run_worker(mem_url: str) -> Callable[..., contextlib.AbstractAsyncContextManager[Worker]]:
    """``async with run_worker(**options) as worker:`` — a worker on ``mem_url`` in the
    background, with signals left alone and a short shutdown grace."""

    def make(
        url: str | None = None, **options: Any
    ) -> contextlib.AbstractAsyncContextManager[Worker]:
        options.setdefault("handle_signals", False)
        options.setdefault("shutdown_grace", 5.0)
        return Worker(url or mem_url, **options)

    return make
