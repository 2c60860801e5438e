"""Bug 7: ``get_result`` of an id the store never saw raises JobNotFound at once, as
``inspect`` does, naming the backend it searched; a chain's later step still waits."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from .conftest import run_script, sitq

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SCRIPT = textwrap.dedent("""
    import asyncio, sys, time
    from sitq import Chain, JobNotFound, TaskQueue, Worker
    from sitq.testing import tasks

    async def main():
        async with TaskQueue(sys.argv[1]) as queue:
            began = time.monotonic()
            try:
                await queue.get_result("0" * 32, timeout=None)   # used to wait forever
            except JobNotFound as exc:
                print("JobNotFound:", exc)
            print(f"after {time.monotonic() - began:.1f}s")
            # A chain's last step is stored only when the step before it has run: its id
            # is not unknown, and get_result waits for it.
            last = await Chain(queue).then(tasks.add, 1, 2).then(tasks.add, 10).enqueue()
            waiting = asyncio.ensure_future(queue.get_result(last, timeout=30))
            await asyncio.sleep(0.3)
            assert not waiting.done(), waiting
            await Worker(queue.backend, burst=True, handle_signals=False).start()
            print("chain", (await waiting).value)

    asyncio.run(main())
""")


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_get_result_of_unknown_id_raises_at_once(tmp_path: Path, store: str) -> None:
    url = "memory://unknown" if store == "memory" else f"sqlite:///{tmp_path / 'u.db'}"
    script = tmp_path / "lookup.py"
    script.write_text(SCRIPT)
    out = run_script(script, url, cwd=tmp_path, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("JobNotFound: no job with id '" + "0" * 32 + "'"), out.stdout
    assert url in lines[0], "the error names the backend it searched"
    assert float(lines[1].split()[1].rstrip("s")) < 5
    assert lines[2] == "chain 13"


def test_cli_inspect_names_the_backend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'i.db'}"
    out = sitq("inspect", "0" * 32, "--backend", url, cwd=tmp_path)
    assert out.returncode == 2
    assert f"no job with id '{'0' * 32}' in {url}" in out.stderr, out.stderr


def test_deferred_ids_are_marked_and_ordinary_ids_are_not() -> None:
    from sitq.job import deferred_job_id, is_deferred_id, new_job_id

    ordinary = [new_job_id() for _ in range(2000)]
    deferred = [deferred_job_id() for _ in range(2000)]
    assert not any(is_deferred_id(i) for i in ordinary)
    assert all(is_deferred_id(i) and len(i) == 32 and int(i, 16) for i in deferred)
    assert len(set(ordinary) | set(deferred)) == 4000
