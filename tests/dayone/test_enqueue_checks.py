"""Bug 8: arguments that do not fit the task's signature are refused at enqueue, from
Python and from ``sitq enqueue``, instead of failing later on the worker."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from .conftest import run_script, sitq

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TASKS = textwrap.dedent("""
    def add(a, b):
        return a + b

    def greet(name, *, punctuation="!"):
        return f"hello {name}{punctuation}"
""")

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from sitq import TaskQueue
    from tasks import add, greet

    async def main():
        async with TaskQueue(sys.argv[1]) as queue:
            for call in (lambda: queue.enqueue(add, 1, 2, retries=3),
                         lambda: queue.enqueue(add, 1),
                         lambda: queue.enqueue_many(add, [(1, 2), (1, 2, 3)]),
                         lambda: queue.enqueue(greet, "x", punct="?")):
                try:
                    await call()
                    print("accepted")
                except TypeError as exc:
                    print(type(exc).__name__, exc)
            print("ok", await queue.enqueue(greet, "x", punctuation="?") is not None)
            print("depth", (await queue.stats(["default"]))["default"].queued)

    asyncio.run(main())
""")


def test_wrong_arguments_are_refused_at_enqueue(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "producer.py").write_text(SCRIPT)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    out = run_script(tmp_path / "producer.py", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("InvalidArguments add() got an unexpected keyword argument "
                               "'retries'"), lines
    assert "queue.options(retries=3).enqueue(...)" in lines[0]
    assert lines[1].startswith("InvalidArguments add() missing a required argument: 'b'")
    assert lines[2].startswith("InvalidArguments enqueue_many item 2: add() takes 2 positional"
                               " arguments but 3 were given")
    assert "did you mean 'punctuation'?" in lines[3]
    # Nothing half-enqueued: only the last, correct call is in the queue.
    assert lines[4:] == ["ok True", "depth 1"]


def test_sitq_enqueue_checks_the_arguments(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    out = sitq("enqueue", "tasks.add", "[1]", "--backend", url, cwd=tmp_path)
    assert out.returncode == 2
    assert "add() missing a required argument: 'b'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    depth = sitq("inspect", "--json", "--backend", url, cwd=tmp_path)
    assert '"queued": 0' in depth.stdout or depth.stdout.strip() in ("{}", ""), depth.stdout
