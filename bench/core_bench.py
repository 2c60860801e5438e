"""Benchmark: the same producer and worker paths measured on two source trees in one run.

Run from the repository root, with a "before" tree of the sources to compare against::

    git archive <commit> sitq-core/src sitq-sqlite/src sitq-redis/src sitq-workers/src \\
        | tar -x -C /tmp/before
    uv run python bench/core_bench.py --before /tmp/before [--jobs 10000] [--rounds 5]

For each backend (a fresh SQLite file in ``bench/.work/``; Redis on 127.0.0.1:6379 with a
queue of its own, purged afterwards) and each tree, every round measures in a fresh
process (rounds alternate the trees, so machine noise hits both alike):

* ``enqueue``: ``await queue.enqueue(noop)`` N times;
* ``bulk``: ``await queue.enqueue_many(noop, [()] * N)``;
* ``drain``: those N jobs run by one ``sitq worker --burst`` process (default
  concurrency 10, as users meet it), from spawning it to its exit.

It also times building one ``Job`` with twelve keywords, positionally, and through
``job_builder`` (:mod:`sitq.job`), the choice behind the producer's hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import timeit
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
DISTS = ("sitq-core", "sitq-sqlite", "sitq-redis", "sitq-workers")


def _env(tree: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    paths = [str(HERE)]
    if tree is not None:  # the tree's sources come before the installed (editable) ones
        paths += [str(tree / dist / "src") for dist in DISTS]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _url(backend: str, name: str) -> str:
    if backend == "redis":
        return "redis://127.0.0.1:6379/0"
    WORK.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(str(WORK / name) + suffix).unlink(missing_ok=True)
    return f"sqlite:///{WORK / name}"


def measure(backend: str, n: int, concurrency: int) -> dict[str, float]:
    """One round in this process (the tree is whatever ``sitq`` imports here)."""
    from bench_tasks import noop

    from sitq import TaskQueue

    tag = uuid.uuid4().hex[:8]
    single, bulk = f"one-{tag}", f"bulk-{tag}"
    url = _url(backend, f"core-{tag}.db")

    async def produce() -> dict[str, float]:
        # Two queues, one after the other: the SQLite backend of the start commit fails a
        # bulk enqueue that follows many single ones on the same TaskQueue.
        async with TaskQueue(url, queue=single) as queue:
            await queue.purge([single, bulk])  # connect (and make the schema) untimed
            started = time.perf_counter()
            for _ in range(n):
                await queue.enqueue(noop)
            enqueue = time.perf_counter() - started
        async with TaskQueue(url, queue=bulk) as queue:
            await queue.stats([bulk])  # connect untimed
            started = time.perf_counter()
            await queue.enqueue_many(noop, [()] * n)
            return {"enqueue": enqueue, "bulk": time.perf_counter() - started}

    figures = asyncio.run(produce())
    cmd = [sys.executable, "-m", "sitq", "--log-level", "WARNING", "worker", "--backend", url,
           "--queue", bulk, "--concurrency", str(concurrency), "--burst"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=300, env=os.environ.copy())
    figures["drain"] = time.perf_counter() - started

    async def clean() -> int:
        async with TaskQueue(url) as queue:
            left = (await queue.stats([bulk]))[bulk]
            if backend == "redis":
                await queue.purge([single, bulk])
            return left.queued + left.running

    if asyncio.run(clean()):
        raise RuntimeError("the worker left jobs behind")
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(str(WORK / f"core-{tag}.db") + suffix).unlink(missing_ok=True)
    return figures


def job_building() -> dict[str, float]:
    """µs to build one producer Job: by keyword, positionally, through job_builder."""
    from sitq.job import Job, job_builder

    h: dict[str, str] = {}
    build = job_builder("id", "queue", "task", "payload", "serializer", "headers",
                        "priority", "eta", "max_retries", "timeout", "key", "result_ttl")
    ways = {
        "keywords": lambda: Job(id="x", queue="q", task="t", payload=b"p", serializer="s",
                                headers=h, priority=0, eta=None, max_retries=0,
                                timeout=None, key=None, result_ttl=None),
        "positional": lambda: Job("x", "q", "t", b"p", "s", h, 0, None, 0, 0, 0, 0, None,
                                  None, None),
        "job_builder": lambda: build("x", "q", "t", b"p", "s", h, 0, None, 0, None, None,
                                     None),
    }
    number = 100_000
    return {name: min(timeit.repeat(way, number=number, repeat=5)) / number * 1e6
            for name, way in ways.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, help="root of the tree to compare against")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--only", default="sqlite,redis")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.jobs, args.concurrency)))
        return
    trees: dict[str, Path | None] = {"after": None}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "after": None}
    backends = args.only.split(",")
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for backend in backends:
            for name, tree in trees.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", backend, "--jobs", str(args.jobs),
                     "--concurrency", str(args.concurrency)],
                    env=_env(tree), capture_output=True, text=True, timeout=900,
                )
                if out.returncode:
                    raise SystemExit(f"{backend} on {name} failed:\n{out.stderr[-3000:]}")
                runs.setdefault((backend, name), []).append(json.loads(out.stdout))
    print(f"{args.jobs} no-op jobs, median of {args.rounds} rounds (jobs/s; drain: one "
          f"`sitq worker --burst --concurrency {args.concurrency}` process, spawn to exit); "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| backend | measurement | " + " | ".join(trees) + " | after / before |")
    print("|---|---|" + "---:|" * len(trees) + "---:|")
    for backend in backends:
        for what in ("enqueue", "bulk", "drain"):
            rates = [args.jobs / statistics.median(r[what] for r in runs[(backend, name)])
                     for name in trees]
            ratio = f"{rates[-1] / rates[0]:.2f}" if len(rates) == 2 else "-"
            cells = " | ".join(f"{rate:,.0f}" for rate in rates)
            print(f"| {backend} | {what} | {cells} | {ratio} |")
    building = job_building()
    print("\nBuilding one producer Job (µs): " + ", ".join(
        f"{name} {us:.2f}" for name, us in building.items()))


if __name__ == "__main__":
    main()
