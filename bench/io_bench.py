"""Benchmark: how busy one worker keeps its slots with I/O-bound jobs.

Run from the repository root (SQLite in ``bench/.work/``, Redis on 127.0.0.1:6379)::

    uv run python bench/io_bench.py [--jobs 2000] [--concurrency 100] [--runs 3]
                                    [--only sqlite,redis]

``--jobs`` jobs of ``await asyncio.sleep(0.05)`` (``bench_tasks:sleep50``) are enqueued,
then ONE worker process (``Worker(url, concurrency=C, burst=True)``) runs them all. With
C jobs always running the ideal time is ``jobs * 0.05 / C`` (1.0 s for the defaults);
efficiency is that ideal divided by the measured wall time:

* **from worker start**: from ``Worker.start()`` being called to it returning (every
  job run and its result stored; burst mode ends the worker when nothing is left);
* **from process start**: from spawning the worker process (interpreter start-up and
  imports included) to the same end.

Each SQLite run uses a fresh database file; each Redis run a queue of its own, purged
afterwards (never FLUSHDB: the server is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
SLEEP = 0.05


def worker_main(url: str, queue: str, concurrency: int, mark: str) -> None:
    """The worker process: record when the worker starts and ends."""
    from sitq import Worker

    async def main() -> tuple[float, float]:
        worker = Worker(url, queues=[queue], concurrency=concurrency, burst=True)
        started = time.time()
        await worker.start()
        return started, time.time()

    started, ended = asyncio.run(main())
    Path(mark).write_text(f"{started} {ended}")


def sqlite_url(name: str) -> str:
    WORK.mkdir(exist_ok=True)
    path = WORK / name
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return f"sqlite:///{path}"


async def fill(url: str, queue: str, n: int) -> list[str]:
    from bench_tasks import sleep50

    from sitq import TaskQueue

    async with TaskQueue(url, queue=queue) as q:
        return await q.enqueue_many(sleep50, [()] * n)


async def check_and_clean(url: str, queue: str, ids: list[str], redis: bool) -> None:
    from sitq import TaskQueue

    async with TaskQueue(url, queue=queue) as q:
        results = [await q.get_result(i) for i in ids]
        bad = [r for r in results if r is None or not r.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(ids)} jobs did not succeed: {bad[:3]}")
        if redis:
            await q.purge([queue])


def one_run(backend: str, n: int, concurrency: int) -> tuple[float, float]:
    queue = f"io-{uuid.uuid4().hex[:8]}"
    url = sqlite_url("io.db") if backend == "sqlite" else "redis://127.0.0.1:6379/0"
    ids = asyncio.run(fill(url, queue, n))
    mark = WORK / f"{queue}.mark"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", url, queue,
           str(concurrency), str(mark)]
    spawned = time.time()
    subprocess.run(cmd, env=env, check=True, timeout=120)
    started, ended = (float(x) for x in mark.read_text().split())
    mark.unlink()
    asyncio.run(check_and_clean(url, queue, ids, backend == "redis"))
    ideal = n * SLEEP / concurrency
    return ideal / (ended - started), ideal / (ended - spawned)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="sqlite,redis")
    parser.add_argument("--worker", nargs=4, metavar=("URL", "QUEUE", "C", "MARK"))
    args = parser.parse_args()
    if args.worker:
        url, queue, concurrency, mark = args.worker
        worker_main(url, queue, int(concurrency), mark)
        return
    sys.path.insert(0, str(HERE))
    backends = args.only.split(",")
    figures: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
    for _ in range(args.runs):  # interleaved, so machine noise hits every backend alike
        for backend in backends:
            figures[backend].append(one_run(backend, args.jobs, args.concurrency))
    ideal = args.jobs * SLEEP / args.concurrency
    print(f"{args.jobs} jobs of asyncio.sleep({SLEEP}), concurrency {args.concurrency}, "
          f"ideal {ideal:.2f} s; load average {os.getloadavg()[0]:.2f}")
    print("| backend | efficiency from worker start | from process start | runs (worker start) |")
    print("|---|---:|---:|---|")
    for backend, runs in figures.items():
        worker = statistics.median(r[0] for r in runs)
        process = statistics.median(r[1] for r in runs)
        each = ", ".join(f"{r[0]:.2f}" for r in runs)
        print(f"| {backend} | **{worker:.2f}** | {process:.2f} | {each} |")


if __name__ == "__main__":
    main()
