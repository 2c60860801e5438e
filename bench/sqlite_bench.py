"""Benchmark: sitq's SQLite backend against raw sqlite3 and huey's SqliteHuey.

Run from the repository root::

    uv run --group bench python bench/sqlite_bench.py [--jobs 10000] [--runs 3]

In one run, for N no-op jobs, it measures (median of ``--runs`` rounds, the figures
of each round interleaved so machine noise hits every contender alike):

* raw sqlite3: N inserts of prepared rows shaped like sitq's (same table and indexes),
  one transaction per row, and one transaction for all rows;
* sitq: ``enqueue`` one by one, ``enqueue_many`` (bulk), and the drain of the N jobs
  by ONE ``sitq worker --burst`` process (async worker, ``--concurrency``);
* huey: N ``noop()`` enqueues through ``SqliteHuey``, and the drain by ONE
  ``huey_consumer -w 1`` process (one worker thread, the default kind).

Every database is a fresh file in WAL mode with ``synchronous=NORMAL``. A drain is timed
until the queue is empty (sitq: every job finished and its result stored; huey: every
task taken), polled every 2 ms, twice: from starting the worker process (start-up
included) and from the moment the first job started (start-up excluded; sitq's first
``Result.started_at``, huey's first ``SIGNAL_EXECUTING``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench_tasks import noop

from sitq import TaskQueue
from sitq_sqlite._schema import MIGRATIONS

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work"


def fresh(name: str) -> Path:
    path = WORK / name
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------ raw
def raw_rows(n: int) -> list[tuple[object, ...]]:
    payload = b"\x80\x05\x95" + b"x" * 40  # the size of a sitq no-op payload
    now = time.time()
    return [
        (uuid.uuid4().hex, "bench", "queued", 0, now, None, 0, None, None, now, None, None,
         "cloudpickle", "bench_tasks:noop", None, payload, None)
        for _ in range(n)
    ]


_RAW_INSERT = (
    "INSERT INTO sitq_jobs (id, queue, state, priority, due, eta, max_retries, timeout,"
    " result_ttl, created_at, key, live_key, serializer, task, headers, payload, chain)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def raw_connect(name: str) -> sqlite3.Connection:
    conn = sqlite3.connect(fresh(name), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    return conn


def bench_raw_per_row(n: int) -> float:
    conn = raw_connect("raw-row.db")
    rows = raw_rows(n)
    started = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_RAW_INSERT, row)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def bench_raw_one_tx(n: int) -> float:
    conn = raw_connect("raw-bulk.db")
    rows = raw_rows(n)
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(_RAW_INSERT, rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


# ------------------------------------------------------------------------------ sitq
def sitq_url(name: str) -> str:
    return f"sqlite:///{fresh(name)}"


def bench_sitq_enqueue(n: int) -> float:
    async def run() -> float:
        async with TaskQueue(sitq_url("sitq-single.db"), queue="bench") as queue:
            await queue.enqueue(noop)  # connect and create the schema outside the timing
            started = time.perf_counter()
            for _ in range(n):
                await queue.enqueue(noop)
            return time.perf_counter() - started

    return asyncio.run(run())


def bench_sitq_enqueue_many(n: int) -> float:
    async def run() -> float:
        async with TaskQueue(sitq_url("sitq-bulk.db"), queue="bench") as queue:
            await queue.purge()  # connect and create the schema outside the timing
            started = time.perf_counter()
            ids = await queue.enqueue_many(noop, [()] * n)
            elapsed = time.perf_counter() - started
            assert len(ids) == n
            return elapsed

    return asyncio.run(run())


def _wait_empty(db: Path, sql: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Poll (every 2 ms, one indexed EXISTS) until ``sql`` is false; returns that time."""
    conn = sqlite3.connect(db, timeout=30)
    deadline = time.monotonic() + timeout
    try:
        while conn.execute(sql).fetchone()[0]:
            if proc.poll() not in (None, 0):
                raise RuntimeError(f"worker exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("drain timed out")
            time.sleep(0.002)
        return time.time()
    finally:
        conn.close()


def bench_sitq_drain(n: int, concurrency: int) -> tuple[float, float]:
    db = fresh("sitq-drain.db")

    async def fill() -> None:
        async with TaskQueue(f"sqlite:///{db}", queue="bench") as queue:
            await queue.enqueue_many(noop, [()] * n)

    asyncio.run(fill())
    cmd = [sys.executable, "-m", "sitq", "worker", "--backend", f"sqlite:///{db}",
           "--queue", "bench", "--concurrency", str(concurrency), "--burst"]
    env = _env()
    spawned = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    empty = _wait_empty(db, "SELECT EXISTS (SELECT 1 FROM sitq_jobs)", proc, 300)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0 or b"locked" in err:
        raise RuntimeError(f"sitq worker failed: {err.decode()[-2000:]}")

    async def first_start() -> float:
        async with TaskQueue(f"sqlite:///{db}") as queue:
            with sqlite3.connect(db) as conn:
                ids = [i for (i,) in conn.execute("SELECT id FROM sitq_results")]
            assert len(ids) == n, f"{len(ids)} results for {n} jobs"
            results = [await queue.get_result(i) for i in ids]
        assert all(r is not None and r.ok for r in results)
        return min(r.started_at.timestamp() for r in results)  # type: ignore[union-attr]

    return empty - spawned, empty - asyncio.run(first_start())


# ------------------------------------------------------------------------------ huey
def _env() -> dict[str, str]:
    """The environment of worker processes: bytecode caching on, as in a normal install
    (this machine's sessions set PYTHONDONTWRITEBYTECODE, which makes every start-up
    compile every module), and bench/ importable for the task modules."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return env


def _huey_env(db: Path) -> dict[str, str]:
    return {**_env(), "SITQ_BENCH_HUEY_DB": str(db),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def bench_huey_enqueue(n: int) -> float:
    db = fresh("huey-enqueue.db")
    code = (
        "import sys, time\n"
        "from huey_app import huey, noop\n"
        "noop()\n"
        "n = int(sys.argv[1]) - 1\n"
        "started = time.perf_counter()\n"
        "for _ in range(n):\n"
        "    noop()\n"
        "print(time.perf_counter() - started)\n"
    )
    # In a subprocess so the app module reads its database path from the environment.
    out = subprocess.run([sys.executable, "-c", code, str(n + 1)], env=_huey_env(db),
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def bench_huey_drain(n: int) -> tuple[float, float]:
    db = fresh("huey-drain.db")
    start_file = WORK / "huey-first-start"
    start_file.unlink(missing_ok=True)
    env = {**_huey_env(db), "SITQ_BENCH_HUEY_START": str(start_file)}
    subprocess.run(
        [sys.executable, "-c", f"from huey_app import noop\nfor _ in range({n}): noop()"],
        env=env, check=True,
    )
    consumer = shutil.which("huey_consumer", path=os.path.dirname(sys.executable))
    assert consumer, "huey_consumer not found: run with uv run --group bench"
    spawned = time.time()
    proc = subprocess.Popen([consumer, "huey_app.huey", "-w", "1", "-k", "thread", "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        empty = _wait_empty(db, "SELECT EXISTS (SELECT 1 FROM task)", proc, 600)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    return empty - spawned, empty - float(start_file.read_text())


# ------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100,
                        help="sitq worker concurrency for the drain (default 100)")
    parser.add_argument("--only", help="comma list of measurements to run")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    n = args.jobs
    drains: dict[str, tuple[float, float]] = {}

    def split(name: str, fn: Callable[[], tuple[float, float]]) -> Callable[[], float]:
        def run() -> float:
            total, steady = fn()
            drains[name] = (total, steady)
            return total

        return run

    benches: dict[str, Callable[[], float]] = {
        "raw sqlite3, 1 tx per row": lambda: bench_raw_per_row(n),
        "raw sqlite3, 1 tx for all": lambda: bench_raw_one_tx(n),
        "sitq enqueue (one by one)": lambda: bench_sitq_enqueue(n),
        "sitq enqueue_many (bulk)": lambda: bench_sitq_enqueue_many(n),
        "huey enqueue (one by one)": lambda: bench_huey_enqueue(n),
        "sitq drain, 1 worker process": split(
            "sitq drain, 1 worker process", lambda: bench_sitq_drain(n, args.concurrency)),
        "huey drain, 1 consumer process": split(
            "huey drain, 1 consumer process", lambda: bench_huey_drain(n)),
    }
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        benches = {k: v for k, v in benches.items() if any(w in k for w in wanted)}
    times: dict[str, list[float]] = {name: [] for name in benches}
    for name in list(benches):
        if name in drains or "drain" in name:
            times[name.replace("drain", "drain, start-up excluded")] = []
    for run in range(args.runs):
        for name, fn in benches.items():
            times[name].append(fn())
            print(f"run {run + 1}: {name:34} {times[name][-1]:8.3f}s", file=sys.stderr)
            if name in drains:
                steady = drains.pop(name)[1]
                times[name.replace("drain", "drain, start-up excluded")].append(steady)
                print(f"run {run + 1}: {'  (first job started -> empty)':34} {steady:8.3f}s",
                      file=sys.stderr)
    med = {name: statistics.median(values) for name, values in times.items()}

    print(f"\n{n:,} no-op jobs, median of {args.runs} runs; sitq worker --concurrency "
          f"{args.concurrency}")
    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} cpus, {platform.machine()}\n")
    print(f"| {'measurement':48} | {'median s':>9} | {'jobs/s':>9} | runs (s) |")
    print(f"|{'-' * 50}|{'-' * 11}|{'-' * 11}|----------|")
    for name, value in med.items():
        runs = ", ".join(f"{v:.3f}" for v in times[name])
        print(f"| {name:48} | {value:9.3f} | {n / value:9,.0f} | {runs} |")

    def ratio(a: str, b: str, label: str) -> None:
        if a in med and b in med:
            print(f"- {label}: {med[b] / med[a]:.2f}x")

    print()
    ratio("sitq drain, 1 worker process", "huey drain, 1 consumer process",
          "sitq drain vs huey drain, process start to empty (target >= 2x)")
    ratio("sitq drain, start-up excluded, 1 worker process",
          "huey drain, start-up excluded, 1 consumer process",
          "sitq drain vs huey drain, first job started to empty (target >= 2x)")
    ratio("sitq enqueue_many (bulk)", "raw sqlite3, 1 tx for all",
          "sitq bulk enqueue vs raw one-transaction inserts (target >= 0.5x)")
    ratio("sitq enqueue (one by one)", "raw sqlite3, 1 tx per row",
          "sitq single enqueue vs raw one-transaction-per-row inserts")
    ratio("sitq enqueue (one by one)", "huey enqueue (one by one)",
          "sitq single enqueue vs huey enqueue")


if __name__ == "__main__":
    main()
