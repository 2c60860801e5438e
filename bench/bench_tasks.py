"""The sitq side of bench/sqlite_bench.py: one no-op task in a light module (the worker
process imports it; ``sitq.testing.tasks`` would also import pytest)."""

from __future__ import annotations


async def noop() -> None:
    return None


def noop_sync() -> None:
    return None
