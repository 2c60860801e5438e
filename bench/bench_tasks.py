"""The sitq side of bench/sqlite_bench.py: one no-op task in a light module (the worker
process imports it; ``sitq.testing.tasks`` would also import pytest)."""

from __future__ import annotations

import asyncio


async def noop() -> None:
    return None


def noop_sync() -> None:
    return None


async def sleep50() -> None:
    """An I/O-bound job: 50 ms of waiting (bench/io_bench.py)."""
    await asyncio.sleep(0.05)
