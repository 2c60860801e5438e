"""`sitq schedules` and `sitq scheduler` as subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sitq import SyncTaskQueue

pytestmark = pytest.mark.timeout(90)

APP = textwrap.dedent("""
    from sitq import TaskQueue
    from sitq.testing import tasks

    queue = TaskQueue("memory://")
    queue.cron("* * * * * *", tasks.add, 1, 2, name="tick")
    queue.options(queue="reports").cron("0 9 * * 1-5", tasks.noop, name="weekday-report",
                                        tz="Europe/Berlin")
""")


def _sitq(*args: str, cwd: Path) -> list[str]:
    return [sys.executable, "-m", "sitq", *args]


def test_schedules_lists_what_the_app_declares(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    out = subprocess.run(_sitq("schedules", "--app", "myapp", "--json", cwd=tmp_path),
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["tick"]["task"] == "sitq.testing.tasks:add"
    assert rows["weekday-report"]["queue"] == "reports"
    assert rows["weekday-report"]["tz"] == "Europe/Berlin"


def test_scheduler_alone_enqueues_ticks_into_the_backend(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(_sitq("scheduler", "--backend", url, "--app", "myapp",
                                  cwd=tmp_path), cwd=tmp_path, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(3.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with SyncTaskQueue(url) as queue:
        depth = queue.stats(["default"])["default"].queued
    assert 2 <= depth <= 5, err


def test_scheduler_without_app_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run(_sitq("scheduler", "--backend", "memory://", cwd=tmp_path),
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "pass --app MODULE" in out.stderr
