"""sitq-rabbitmq installed the way a user installs it, and used from the command line.

A throwaway virtualenv gets ``pip install -e sitq-core -e examples/sitq-rabbitmq`` (uv's
pip); then ``sitq plugins`` must list the plugin, and a ``sitq worker --backend amqp://...``
subprocess must run a module function, a lambda and a failing task that a client process
enqueued with ``TaskQueue("amqp://guest:guest@127.0.0.1:5672/")``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLUGIN = ROOT / "examples" / "sitq-rabbitmq"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TASKS = '''
def add(a, b):
    return a + b

def boom(message):
    raise ValueError(message)
'''

CLIENT = '''
import asyncio, json, sys
from sitq import TaskQueue
import tasks

async def main(url, queue_name):
    async with TaskQueue(url) as queue:
        q = queue.options(queue=queue_name)
        ids = [await q.enqueue(tasks.add, 2, 3),
               await q.enqueue(lambda x: x * 7, 6),
               await q.enqueue(tasks.boom, "no luck")]
        out = []
        for job_id in ids:
            result = await queue.get_result(job_id, timeout=60)
            out.append(None if result is None else
                       [result.status, result.value, str(result.error) if result.error else None])
        await queue.purge([queue_name])
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
'''


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("this test builds a virtualenv with uv (pip install uv)")
    path = tmp_path_factory.mktemp("user") / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    for cmd in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(path)],
        [uv, "pip", "install", "--quiet", "--python", str(path / "bin" / "python"),
         "-e", str(ROOT / "sitq-core"), "-e", str(PLUGIN)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
    return path


def _run(venv: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_sitq_plugins_lists_it(venv: Path) -> None:
    proc = _run(venv, "sitq", "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)}
    amqp = plugins["amqp"]
    assert amqp["distribution"] == "sitq-rabbitmq"
    assert amqp["version"] == "0.1.0"
    assert amqp["error"] is None
    assert sorted(amqp["registered"]["backend"]) == ["amqp", "amqps"]


@pytest.fixture
def worker(venv: Path, amqp_url: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """``sitq worker --backend amqp://...`` running in the user's virtualenv."""
    queue_name = f"installed-{uuid.uuid4().hex[:10]}"
    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "client.py").write_text(textwrap.dedent(CLIENT))
    parts = urlsplit(amqp_url)
    url = f"amqp://guest:guest@{parts.hostname}:{parts.port or 5672}/"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env["PYTHONPATH"] = str(tmp_path)  # the worker imports tasks.py by name
    proc = subprocess.Popen(
        [str(venv / "bin" / "sitq"), "worker", "--backend", url, "--queue", queue_name],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield url, queue_name, tmp_path
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        assert proc.returncode == 0, f"the worker exited with {proc.returncode}:\n{err[-3000:]}"


def test_function_lambda_and_failure_round_trip(
    venv: Path, worker: tuple[str, str, Path]
) -> None:
    url, queue_name, workdir = worker
    proc = _run(venv, "python", "client.py", url, queue_name, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    add, lam, boom = json.loads(proc.stdout)
    assert add == ["success", 5, None]
    assert lam == ["success", 42, None]
    assert boom == ["failed", None, "ValueError: no luck"]
