"""sitq-redis against arq, SAQ, taskiq-redis and raw redis-py, in one run.

    uv run --group bench python bench/redis_bench.py [--jobs 10000] [--rounds 3] [--rtt 300]
                                                     [--only sitq,raw,arq,saq,taskiq]
                                                     [--paired-only]

For every system, each round measures:

* enqueue one by one: ``--jobs`` no-op jobs, one awaited call each;
* bulk enqueue: the same number through the system's bulk API (raw: pipelined LPUSH in
  chunks of 1,000, the chunk size sitq uses);
* drain: a pre-filled queue consumed by ONE worker process (concurrency 10 where the
  system has the knob), timed from the first job's start to the last job's start as
  recorded inside the worker (so interpreter start-up is not counted); raw: RPOP one by
  one from a client;
* round trip: ``--rtt`` sequential enqueue -> worker runs it -> client has the result,
  p50/p95/p99 (raw: LPUSH + BRPOP-ing worker + LPUSH reply + BRPOP-ing client).

``--paired-only`` runs only the paired sitq/raw blocks (see :func:`paired`); with
``PYTHONPATH`` pointing at another checkout's ``sitq-core/src`` and ``sitq-redis/src`` it
measures that code instead (how RESULTS.md compares commits in one session).

Figures are medians of ``--rounds`` rounds. Every system gets its own Redis database
(``--db-base`` .. +4), which must be empty when the run starts; the run deletes what it
wrote there at the end. Results go to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

HOST = os.environ.get("BENCH_REDIS_HOST", "127.0.0.1")
PORT = int(os.environ.get("BENCH_REDIS_PORT", "6379"))
SYSTEMS = ["sitq", "raw", "arq", "saq", "taskiq"]
CONCURRENCY = 10


@dataclass
class Figures:
    enqueue: list[float] = field(default_factory=list)  # jobs/s
    bulk: list[float] = field(default_factory=list)
    drain: list[float] = field(default_factory=list)
    rtt: list[list[float]] = field(default_factory=list)  # ms, per round


def url(db: int) -> str:
    return f"redis://{HOST}:{PORT}/{db}"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- workers
def spawn_worker(
    system: str, db: int, queue: str, expect: int, mark: str
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BENCH_EXPECT=str(expect), BENCH_MARK_FILE=mark,
               PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", system,
           "--db", str(db), "--queue", queue]
    return subprocess.Popen(cmd, env=env, cwd=str(HERE))


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def wait_mark(mark: str, proc: subprocess.Popen[bytes], limit: float = 300) -> float:
    deadline = time.monotonic() + limit
    done = Path(mark)
    while not done.exists():  # noqa: ASYNC240 - a stat every 20 ms, outside the timing
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode} before finishing")
        if time.monotonic() > deadline:
            raise TimeoutError("drain did not finish")
        await asyncio.sleep(0.02)
    first, last = (float(x) for x in done.read_text().split())  # noqa: ASYNC240
    return last - first


def run_worker(system: str, db: int, queue: str) -> None:
    """Entry point of the worker subprocess (``--worker``)."""
    import _bench_tasks

    if system == "sitq":
        from sitq import Worker

        async def main() -> None:
            worker = Worker(url(db), queues=[queue], concurrency=CONCURRENCY)
            await worker.start()

        asyncio.run(main())
    elif system == "raw":
        asyncio.run(raw_worker(db, queue))
    elif system == "arq":
        from arq.connections import RedisSettings
        from arq.worker import Worker as ArqWorker
        from arq.worker import func

        async def noop(ctx: Any) -> None:
            _bench_tasks._mark()

        w = ArqWorker(functions=[func(noop, name="noop")],
                      redis_settings=RedisSettings(host=HOST, port=PORT, database=db),
                      queue_name=queue, max_jobs=CONCURRENCY, poll_delay=0.005,
                      handle_signals=True, keep_result=3600)
        w.run()
    elif system == "saq":
        from saq import Queue as SaqQueue
        from saq import Worker as SaqWorker

        async def noop(ctx: Any) -> None:
            _bench_tasks._mark()

        async def main() -> None:
            q = SaqQueue.from_url(url(db), name=queue)
            worker = SaqWorker(q, functions=[("noop", noop)], concurrency=CONCURRENCY)
            await worker.start()

        asyncio.run(main())
    elif system == "taskiq":
        from taskiq.api import run_receiver_task

        broker = taskiq_broker(db, queue)

        async def main() -> None:
            await broker.startup()
            await run_receiver_task(broker, max_async_tasks=CONCURRENCY, run_startup=False)

        asyncio.run(main())
    else:
        raise SystemExit(f"unknown system {system}")


# --------------------------------------------------------------------------- sitq
async def bench_sitq(db: int, n: int, rtt_n: int, fig: Figures) -> None:
    from _bench_tasks import noop

    from sitq import TaskQueue

    q = f"bench-{os.getpid()}"
    async with TaskQueue(url(db), serializer="cloudpickle") as queue:
        bound = queue.options(queue=q)
        t = time.perf_counter()
        for _ in range(n):
            await bound.enqueue(noop)
        fig.enqueue.append(n / (time.perf_counter() - t))
        await queue.purge([q])

        t = time.perf_counter()
        await bound.enqueue_many(noop, [() for _ in range(n)])
        fig.bulk.append(n / (time.perf_counter() - t))
        fig.drain.append(await drain("sitq", db, q, n))
        await queue.purge([q])

        async def one() -> None:
            job_id = await bound.enqueue(noop)
            result = await queue.get_result(job_id, timeout=10)
            assert result is not None and result.ok, result

        fig.rtt.append(await round_trips("sitq", db, q, rtt_n, one))
        await queue.purge([q])


async def drain(system: str, db: int, queue: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        mark = os.path.join(tmp, "mark")
        proc = spawn_worker(system, db, queue, n, mark)
        try:
            seconds = await wait_mark(mark, proc)
        finally:
            stop_worker(proc)
    return n / seconds


async def round_trips(
    system: str, db: int, queue: str, count: int, one: Callable[[], Awaitable[None]]
) -> list[float]:
    proc = spawn_worker(system, db, queue, 0, "")
    try:
        for _ in range(50):  # warm-up; also waits for the worker to be up
            await asyncio.wait_for(one(), 60)
        out = []
        for _ in range(count):
            t = time.perf_counter()
            await one()
            out.append((time.perf_counter() - t) * 1000)
        return out
    finally:
        stop_worker(proc)


# --------------------------------------------------------------------------- raw redis-py
PAYLOAD = b"x" * 100


async def bench_raw(db: int, n: int, rtt_n: int, fig: Figures) -> None:
    import redis.asyncio as aioredis

    key = f"raw:bench:{os.getpid()}"
    r = aioredis.Redis.from_url(url(db))
    try:
        t = time.perf_counter()
        for _ in range(n):
            await r.lpush(key, PAYLOAD)
        fig.enqueue.append(n / (time.perf_counter() - t))
        await r.delete(key)

        t = time.perf_counter()
        for start in range(0, n, 1000):
            pipe = r.pipeline(transaction=False)
            for _ in range(min(1000, n - start)):
                pipe.lpush(key, PAYLOAD)
            await pipe.execute()
        fig.bulk.append(n / (time.perf_counter() - t))

        t = time.perf_counter()
        got = 0
        while await r.rpop(key) is not None:
            got += 1
        fig.drain.append(got / (time.perf_counter() - t))
        await r.delete(key)

        async def one() -> None:
            await r.lpush(key, PAYLOAD)
            reply = await r.brpop([key + ":reply"], timeout=10)
            assert reply is not None

        fig.rtt.append(await round_trips("raw", db, key, rtt_n, one))
        await r.delete(key, key + ":reply")
    finally:
        await r.aclose()


async def raw_worker(db: int, key: str) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url(db))
    while True:
        item = await r.brpop([key], timeout=1)
        if item is not None:
            await r.lpush(key + ":reply", item[1])


# --------------------------------------------------------------------------- peers
async def gathered(calls: Callable[[], Awaitable[Any]], n: int, chunk: int = 1000) -> None:
    """Bulk enqueue for systems without a bulk API: ``chunk`` concurrent calls at a time."""
    for start in range(0, n, chunk):
        await asyncio.gather(*(calls() for _ in range(min(chunk, n - start))))


async def bench_arq(db: int, n: int, rtt_n: int, fig: Figures) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    q = f"arq:bench:{os.getpid()}"
    pool = await create_pool(RedisSettings(host=HOST, port=PORT, database=db),
                             default_queue_name=q)
    try:
        t = time.perf_counter()
        for _ in range(n):
            await pool.enqueue_job("noop")
        fig.enqueue.append(n / (time.perf_counter() - t))
        await pool.flushdb()  # arq keeps one key per job; this database is ours alone

        t = time.perf_counter()
        await gathered(lambda: pool.enqueue_job("noop"), n)
        fig.bulk.append(n / (time.perf_counter() - t))
        fig.drain.append(await drain("arq", db, q, n))
        await pool.flushdb()

        async def one() -> None:
            job = await pool.enqueue_job("noop")
            assert job is not None
            await job.result(timeout=10, poll_delay=0.005)

        fig.rtt.append(await round_trips("arq", db, q, rtt_n, one))
        await pool.flushdb()
    finally:
        await pool.aclose()


async def bench_saq(db: int, n: int, rtt_n: int, fig: Figures) -> None:
    from saq import Queue as SaqQueue

    q = f"bench-{os.getpid()}"
    queue = SaqQueue.from_url(url(db), name=q)
    await queue.connect()
    try:
        t = time.perf_counter()
        for _ in range(n):
            await queue.enqueue("noop")
        fig.enqueue.append(n / (time.perf_counter() - t))
        await queue.redis.flushdb()

        t = time.perf_counter()
        await gathered(lambda: queue.enqueue("noop"), n)
        fig.bulk.append(n / (time.perf_counter() - t))
        fig.drain.append(await drain("saq", db, q, n))
        await queue.redis.flushdb()

        async def one() -> None:
            job = await queue.enqueue("noop")
            assert job is not None
            # SAQ waits on its pub/sub channel. A completion that lands between refresh's
            # read and its subscribe is missed (seen in practice) and the wait runs to its
            # timeout, so wait in 1 s slices: such a miss costs that sample up to 1 s.
            deadline = time.monotonic() + 10
            while job.status != "complete" and time.monotonic() < deadline:
                with contextlib.suppress(asyncio.TimeoutError):
                    await job.refresh(until_complete=1.0)
            assert job.status == "complete", job.status

        fig.rtt.append(await round_trips("saq", db, q, rtt_n, one))
        await queue.redis.flushdb()
    finally:
        await queue.disconnect()


def taskiq_broker(db: int, queue: str) -> Any:
    from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

    broker = ListQueueBroker(url(db), queue_name=queue).with_result_backend(
        RedisAsyncResultBackend(url(db), result_ex_time=3600)
    )

    async def noop() -> None:
        import _bench_tasks

        _bench_tasks._mark()

    broker.register_task(noop, task_name="noop")
    return broker


async def bench_taskiq(db: int, n: int, rtt_n: int, fig: Figures) -> None:
    q = f"taskiq-bench-{os.getpid()}"
    broker = taskiq_broker(db, q)
    await broker.startup()
    task = broker.find_task("noop")
    assert task is not None
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url(db))
    try:
        t = time.perf_counter()
        for _ in range(n):
            await task.kiq()
        fig.enqueue.append(n / (time.perf_counter() - t))
        await r.flushdb()

        t = time.perf_counter()
        await gathered(task.kiq, n)
        fig.bulk.append(n / (time.perf_counter() - t))
        fig.drain.append(await drain("taskiq", db, q, n))
        await r.flushdb()

        async def one() -> None:
            handle = await task.kiq()
            result = await handle.wait_result(check_interval=0.005, timeout=10)
            assert not result.is_err

        fig.rtt.append(await round_trips("taskiq", db, q, rtt_n, one))
        await r.flushdb()
    finally:
        await r.aclose()
        await broker.shutdown()


BENCHES: dict[str, Callable[[int, int, int, Figures], Awaitable[None]]] = {
    "sitq": bench_sitq,
    "raw": bench_raw,
    "arq": bench_arq,
    "saq": bench_saq,
    "taskiq": bench_taskiq,
}


# --------------------------------------------------------------------------- main
@contextlib.asynccontextmanager
async def own_db(db: int) -> AsyncIterator[None]:
    """Use database ``db`` only if it is empty; delete what the run wrote afterwards."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url(db))
    try:
        if await r.dbsize():
            raise SystemExit(f"Redis database {db} is not empty; pick another --db-base")
        yield
    finally:
        async for key in r.scan_iter(count=1000):
            await r.delete(key)
        await r.aclose()


def table(results: dict[str, Figures], n: int) -> str:
    def med(xs: list[float]) -> str:
        return f"{statistics.median(xs):,.0f}" if xs else "-"

    lines = [
        f"| system | enqueue 1-by-1 (jobs/s) | bulk enqueue (jobs/s) | drain {n:,} (jobs/s) "
        "| round trip p50 / p95 / p99 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, fig in results.items():
        if fig.rtt:
            ps = [statistics.median(pct(r, p) for r in fig.rtt) for p in (50, 95, 99)]
            rtt = " / ".join(f"{p:.2f}" for p in ps)
        else:
            rtt = "-"
        lines.append(f"| {name} | {med(fig.enqueue)} | {med(fig.bulk)} | {med(fig.drain)} "
                     f"| {rtt} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    if args.paired_only:
        async with own_db(args.db_base), own_db(args.db_base + 1):
            print(await paired(args.db_base, args.db_base + 1, args.jobs))
        import sitq

        print(f"sitq from {Path(sitq.__file__).parent}; load average {os.getloadavg()[0]:.2f}")
        return
    systems = [s for s in args.only.split(",") if s]
    results: dict[str, Figures] = {s: Figures() for s in systems}
    started = os.getloadavg()
    for round_no in range(args.rounds):
        order = systems[round_no % len(systems):] + systems[:round_no % len(systems)]
        for system in order:  # rotated each round, so no system always runs first
            db = args.db_base + SYSTEMS.index(system)
            async with own_db(db):
                t = time.perf_counter()
                await BENCHES[system](db, args.jobs, args.rtt, results[system])
                print(f"round {round_no + 1} {system}: {time.perf_counter() - t:.1f}s",
                      file=sys.stderr)
    print(table(results, args.jobs))
    if "sitq" in systems and "raw" in systems:
        db_sitq, db_raw = args.db_base, args.db_base + 1
        async with own_db(db_sitq), own_db(db_raw):
            print()
            print(await paired(db_sitq, db_raw, args.jobs))
    print()
    print(await versions())
    print(f"load average at start {started[0]:.2f}, at end {os.getloadavg()[0]:.2f}; "
          f"{args.rounds} rounds, medians; {args.jobs:,} jobs; {args.rtt} round trips")


async def paired(db_sitq: int, db_raw: int, n: int, block: int = 500) -> str:
    """sitq against raw redis-py in alternating blocks, so both see the same machine load
    (this machine is shared, and load swings by 2x within seconds). Per-block ratios of
    sitq's rate to raw's; the median and the quartiles are reported."""
    import redis.asyncio as aioredis
    from _bench_tasks import noop

    from sitq import TaskQueue

    key = f"raw:paired:{os.getpid()}"
    q = f"paired-{os.getpid()}"
    r = aioredis.Redis.from_url(url(db_raw))
    # For reference only (not the target's baseline): LPUSH over one connection the client
    # holds (redis-py's single_connection_client), without the pool's per-command check;
    # sitq's single enqueue also goes over a connection its backend holds.
    held = aioredis.Redis.from_url(url(db_raw), single_connection_client=True)
    one: list[float] = []
    one_held: list[float] = []
    bulk: list[float] = []
    rates: dict[str, list[float]] = {"sitq": [], "raw": [], "held": []}
    async with TaskQueue(url(db_sitq)) as queue:
        bound = queue.options(queue=q)
        await bound.enqueue(noop)
        await r.lpush(key, PAYLOAD)
        await held.lpush(key, PAYLOAD)
        for _ in range(max(1, n // block)):
            t = time.perf_counter()
            for _ in range(block):
                await bound.enqueue(noop)
            sitq_s = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(block):
                await r.lpush(key, PAYLOAD)
            raw_s = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(block):
                await held.lpush(key, PAYLOAD)
            held_s = time.perf_counter() - t
            one.append(raw_s / sitq_s)
            one_held.append(held_s / sitq_s)
            rates["sitq"].append(block / sitq_s)
            rates["raw"].append(block / raw_s)
            rates["held"].append(block / held_s)
        await queue.purge([q])
        await r.delete(key)
        for _ in range(7):  # each block is the bulk phase of the table: n jobs
            t = time.perf_counter()
            await bound.enqueue_many(noop, [() for _ in range(n)])
            sitq_s = time.perf_counter() - t
            t = time.perf_counter()
            for start in range(0, n, 1000):
                pipe = r.pipeline(transaction=False)
                for _ in range(min(1000, n - start)):
                    pipe.lpush(key, PAYLOAD)
                await pipe.execute()
            raw_s = time.perf_counter() - t
            bulk.append(raw_s / sitq_s)
            await queue.purge([q])
            await r.delete(key)
        await queue.purge([q])
        await r.delete(key)
    await r.aclose()
    await held.aclose()

    def fmt(xs: list[float]) -> str:
        qs = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
        return f"{qs[1]:.0%} (quartiles {qs[0]:.0%}-{qs[2]:.0%}, {len(xs)} blocks)"

    return (
        "Paired blocks, sitq rate as a share of raw redis-py's in the same moment:\n"
        f"* enqueue one by one vs LPUSH one by one ({block} per block): {fmt(one)}; "
        f"medians {statistics.median(rates['sitq']):,.0f} vs "
        f"{statistics.median(rates['raw']):,.0f} jobs/s\n"
        f"* bulk enqueue vs pipelined LPUSH ({n:,} per block, chunks of 1,000): {fmt(bulk)}\n"
        f"* for reference, enqueue one by one vs LPUSH one by one over one held connection "
        f"(single_connection_client): {fmt(one_held)}; "
        f"median {statistics.median(rates['held']):,.0f} jobs/s"
    )


async def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import redis.asyncio as aioredis

    parts = [f"Python {sys.version.split()[0]}"]
    r = aioredis.Redis.from_url(url(0))
    try:
        parts.append(f"Redis {(await r.info('server'))['redis_version']}")
    finally:
        await r.aclose()
    for dist in ("redis", "hiredis", "arq", "saq", "taskiq", "taskiq-redis"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return ", ".join(parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt", type=int, default=300)
    parser.add_argument("--only", default=",".join(SYSTEMS))
    parser.add_argument("--paired-only", action="store_true")
    parser.add_argument("--db-base", type=int, default=10)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        run_worker(ns.worker, ns.db, ns.queue)
    else:
        asyncio.run(main(ns))
