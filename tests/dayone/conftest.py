"""Day-one tests: what a new user runs, run the way they run it (scripts, the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_sitq_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("SITQ_"):
            monkeypatch.delenv(name)
    yield


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no SITQ_* left over from the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SITQ_")}
    env.update(extra)
    return env


def run_script(path: Path, *args: str, cwd: Path, timeout: float = 60,
               **env: str) -> subprocess.CompletedProcess[str]:
    """``python path`` as a user runs it."""
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=user_env(**env))


def sitq(*args: str, cwd: Path, timeout: float = 60, input: str | None = None,
         **env: str) -> subprocess.CompletedProcess[str]:
    """The ``sitq`` command as a subprocess."""
    return subprocess.run([sys.executable, "-m", "sitq", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=user_env(**env), input=input)
