"""The ``sitq`` command as a subprocess, against a store several processes share.

These need the SQLite backend (sitq-sqlite): they skip until it is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sitq import SyncTaskQueue
from sitq.plugins import get_registry
from sitq.testing import tasks


def _sqlite_available() -> bool:
    # The plugin module registers 'sqlite' even before its backend module exists, so
    # check for the backend module too.
    return ("sqlite" in get_registry().names("backend")
            and importlib.util.find_spec("sitq_sqlite.backend") is not None)


needs_sqlite = pytest.mark.skipif(not _sqlite_available(), reason="needs sitq-sqlite")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SITQ_")}
    env["COLUMNS"] = "200"  # keep rich tables on one line per row
    return env


def sitq(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sitq", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=_env())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"  # an absolute path: sqlite:////tmp/...


@pytest.fixture
def worker_proc(tmp_path: Path, url: str) -> Iterator[subprocess.Popen[str]]:
    """A ``sitq worker`` subprocess; killed at the end if the test left it running."""
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sitq", "worker", "--backend", url, "--lease", "5"],
        stdout=log, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=_env(),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


@needs_sqlite
def test_enqueue_burst_worker_and_inspect(tmp_path: Path, url: str) -> None:
    first = sitq("enqueue", "sitq.testing.tasks.add", "[1, 2]", "--backend", url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    job_id = first.stdout.strip()
    second = sitq("enqueue", "sitq.testing.tasks:multiply", '{"a": 3, "b": 4}',
                  "--backend", url, "--queue", "other", cwd=tmp_path)
    assert second.returncode == 0, second.stderr

    depths = sitq("inspect", "--json", "--backend", url, cwd=tmp_path)
    assert depths.returncode == 0, depths.stderr
    assert json.loads(depths.stdout)["default"]["queued"] == 1
    assert json.loads(depths.stdout)["other"]["queued"] == 1
    depth_table = sitq("inspect", "--backend", url, cwd=tmp_path)
    assert depth_table.returncode == 0, depth_table.stderr
    rows = [line for line in depth_table.stdout.splitlines() if "default" in line
            or "other" in line]
    assert len(rows) == 2 and all(" 1 " in row for row in rows), depth_table.stdout

    worker = sitq("worker", "--backend", url, "--burst", "--queue", "default", "--queue",
                  "other", cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr

    info = sitq("inspect", job_id, "--json", "--backend", url, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert (data["id"], data["state"], data["value"], data["attempts"]) == (job_id, "success",
                                                                           "3", 1)
    other = json.loads(sitq("inspect", second.stdout.strip(), "--json", "--backend", url,
                            cwd=tmp_path).stdout)
    assert other["state"] == "success" and other["value"] == "12"

    table = sitq("inspect", job_id, "--backend", url, cwd=tmp_path)
    assert table.returncode == 0 and "success" in table.stdout and job_id in table.stdout


@needs_sqlite
def test_enqueue_and_wait(tmp_path: Path, url: str,
                          worker_proc: subprocess.Popen[str]) -> None:
    done = sitq("enqueue", "sitq.testing.tasks.add", "[1,2]", "--wait", "10", "--backend", url,
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    job_id, value = done.stdout.split()
    assert value == "3"
    failed = sitq("enqueue", "sitq.testing.tasks.fail", '["cli boom"]', "--wait", "10",
                  "--backend", url, cwd=tmp_path)
    assert failed.returncode == 1
    assert "failed: ValueError: cli boom" in failed.stderr
    assert "raise ValueError(message)" in failed.stderr  # the remote traceback
    info = json.loads(sitq("inspect", job_id, "--json", "--backend", url, cwd=tmp_path).stdout)
    assert info["state"] == "success"
    worker_proc.send_signal(signal.SIGTERM)
    assert worker_proc.wait(30) == 0


@needs_sqlite
def test_sigterm_finishes_the_running_job(tmp_path: Path, url: str,
                                          worker_proc: subprocess.Popen[str]) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with SyncTaskQueue(url) as queue:
        job_id = queue.enqueue(tasks.marker_then_sleep, str(markers), "job", 1.5)
        deadline = time.monotonic() + 30
        while not list(markers.glob("started-job-*")):
            assert time.monotonic() < deadline, "the worker never started the job"
            assert worker_proc.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.02)
        process = psutil.Process(worker_proc.pid)
        children = process.children(recursive=True)
        worker_proc.send_signal(signal.SIGTERM)
        assert worker_proc.wait(30) == 0, (tmp_path / "worker.log").read_text()
        assert len(list(markers.glob("done-job-*"))) == 1, "the running job was cut short"
        result = queue.get_result(job_id, timeout=5)
    assert result is not None and result.unwrap() == "job" and result.attempts == 1
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"orphan child processes: {alive}"
    orphans = [p for p in psutil.process_iter(["ppid"]) if p.info["ppid"] == worker_proc.pid]
    assert orphans == []


def test_cli_errors_say_what_to_do(tmp_path: Path) -> None:
    """Errors before any store is opened: exit status 2 and a message on stderr."""
    missing = sitq("enqueue", "no_such_pkg_xyz.tasks.send", "[]", cwd=tmp_path)
    assert missing.returncode == 2
    assert "cannot import module 'no_such_pkg_xyz.tasks'" in missing.stderr
    bad_json = sitq("enqueue", "sitq.testing.tasks.add", "[1, 2", cwd=tmp_path)
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    # A server backend this workspace does not install (yet).
    redis = sitq("worker", "--backend", "nats://localhost:4222", cwd=tmp_path)
    assert redis.returncode == 2
    assert "backend 'nats' is not installed; pip install sitq-nats" in redis.stderr
    assert "Traceback" not in redis.stderr + missing.stderr + bad_json.stderr
