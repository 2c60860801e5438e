"""Bug 1: a SyncTaskQueue nobody closed must not hang the process at exit."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import require_server

from .conftest import run_script

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SCRIPT = textwrap.dedent("""
    import sys
    from sitq import SyncTaskQueue
    from sitq.testing import tasks

    q = SyncTaskQueue(sys.argv[1])          # module level, never closed (the Flask pattern)
    if sys.argv[2] == "used":
        print(q.enqueue(tasks.add, 1, 2))
    print("end of script")
""")


@pytest.mark.parametrize("use", ["unused", "used"])
@pytest.mark.parametrize("store", ["memory", "sqlite", "redis"])
def test_unclosed_sync_queue_exits(tmp_path: Path, store: str, use: str) -> None:
    if store == "redis":
        require_server("Redis", "127.0.0.1", 6379)
        url = "redis://127.0.0.1:6379/0"
    else:
        url = {"memory": "memory://exit", "sqlite": f"sqlite:///{tmp_path / 'exit.db'}"}[store]
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    out = run_script(script, url, use, cwd=tmp_path, timeout=30,
                     PYTHONWARNINGS="always::ResourceWarning")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("end of script")
    assert "Traceback" not in out.stderr, out.stderr
    # The queue is closed for the user at exit, and they are told they left it open.
    assert "ResourceWarning" in out.stderr and "SyncTaskQueue" in out.stderr, out.stderr
