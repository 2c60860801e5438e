"""Importable task functions used by the conformance suite and sitq's own tests."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any


async def add(a: int, b: int) -> int:
    return a + b


def multiply(a: int, b: int) -> int:
    return a * b


async def noop() -> None:
    return None


def fail(message: str = "boom") -> None:
    raise ValueError(message)


async def sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def sleep_sync(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def record(path: str, token: str) -> str:
    """Append ``token`` to the file at ``path`` (an execution log) and return it."""
    with open(path, "a") as fh:
        fh.write(token + "\n")
    return token


def flaky(path: str, failures: int) -> int:
    """Fail the first ``failures`` runs (counted in the file at ``path``), then succeed."""
    with open(path, "a+") as fh:
        fh.seek(0)
        runs = len(fh.read().splitlines())
        fh.write("run\n")
    if runs < failures:
        raise RuntimeError(f"flaky failure {runs + 1}")
    return runs + 1


async def marker_then_sleep(directory: str, name: str, seconds: float) -> str:
    """Write ``started-<name>-<pid>`` in ``directory``, sleep, write ``done-<name>-<pid>``."""
    Path(directory, f"started-{name}-{os.getpid()}").touch()
    await asyncio.sleep(seconds)
    Path(directory, f"done-{name}-{os.getpid()}").touch()
    return name


async def slow_once(directory: str, seconds: float) -> str:
    """First run: write ``started-<pid>`` in ``directory`` and sleep ``seconds``; every
    later run returns at once."""
    marker = Path(directory, "ran-once")
    if not marker.exists():
        marker.touch()
        Path(directory, f"started-{os.getpid()}").touch()
        await asyncio.sleep(seconds)
        return "first run"
    return "later run"


def unpicklable_result() -> Any:
    import threading

    return threading.Lock()


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


def crash(code: int = 3) -> None:
    """Exit the process at once, as a segfault or an OOM kill would (no cleanup)."""
    os._exit(code)


def getpid() -> int:
    return os.getpid()
