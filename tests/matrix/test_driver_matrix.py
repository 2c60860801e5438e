"""Each backend's tests at the lowest driver its pyproject.toml declares (see drivers.py).

The environment is a virtualenv built by uv from the lock file's export (the workspace
editable, every other package at its locked version) with the row's driver replaced by
``driver==<lower bound>``. It is kept under ``.venv-matrix/`` and rebuilt only when the
lock or the pin changes, so a rerun costs only the tests. ``SITQ_SKIP_DRIVER_MATRIX=1``
skips the rows on a laptop (never with ``CI=true``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.version import Version

from tests.conftest import IN_CI
from tests.matrix.drivers import REPORT, ROOT, ROWS, Row, _canonical, lowest

#: Bounds: building one environment, and running one row's tests there.
BUILD_TIMEOUT = 600
RUN_TIMEOUT = 1200

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT + RUN_TIMEOUT + 60)]


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("the driver matrix needs uv on PATH (pip install uv)")
    return uv


def _requirements(row: Row, version: str) -> str:
    """The lock's export with ``row.driver`` pinned to ``version`` instead (and the
    row's ``unpinned`` packages left to the resolver)."""
    exported = subprocess.run(
        [_uv(), "export", "--frozen", "--no-hashes", "--no-header", "--no-annotate",
         "--all-packages", "--group", "dev"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    dropped = {_canonical(name) for name in (row.driver, *row.unpinned)}
    lines = [line for line in exported.splitlines()
             if _canonical(re.split(r"[=<>!~;\[ ]", line.strip(), maxsplit=1)[0]) not in dropped]
    return "\n".join([*lines, f"{row.driver}=={version}", ""])


def _environment(row: Row, version: str) -> Path:
    """A virtualenv with the workspace and ``row.driver==version`` (built once, reused)."""
    requirements = _requirements(row, version)
    key = hashlib.sha256(f"{sys.version}\n{requirements}".encode()).hexdigest()[:16]
    venv = ROOT / ".venv-matrix" / f"{row.driver}-{version}"
    done = venv / "sitq-matrix.key"
    if done.exists() and done.read_text() == key:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(exist_ok=True)
    reqs = venv.parent / f"{row.driver}-{version}.txt"
    reqs.write_text(requirements)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    for cmd in (
        [_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)],
        [_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         "-r", str(reqs)],
    ):
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env,
                              timeout=BUILD_TIMEOUT)
        if proc.returncode:
            message = (f"could not build the {row.driver}=={version} environment:\n"
                       f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)  # e.g. offline on a laptop
    done.write_text(key)
    return venv


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.dist}-{r.driver}")
def test_backend_tests_pass_at_the_lowest_declared_driver(row: Row) -> None:
    if os.environ.get("SITQ_SKIP_DRIVER_MATRIX") and not IN_CI:
        pytest.skip("SITQ_SKIP_DRIVER_MATRIX is set")
    version = lowest(row)
    venv = _environment(row, version)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-c", f"from importlib.metadata import version; "
                            f"print(version({row.driver!r}))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Version(installed) == Version(version), f"{row.driver} {installed} != {version}"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    started = time.monotonic()
    proc = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *row.tests],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT,
    )
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1].strip("= ") if lines else "no output"
    REPORT.append(f"{row.dist} with {row.driver}=={installed} (lowest declared): {summary} "
                  f"[{time.monotonic() - started:.0f}s]")
    assert proc.returncode == 0, (
        f"{row.dist}'s tests fail with {row.driver}=={installed}, the lowest version its "
        f"pyproject.toml allows:\n" + "\n".join(lines[-60:]) + proc.stderr[-3000:]
    )
