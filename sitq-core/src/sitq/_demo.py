"""``sitq demo``: enqueue a batch, run a worker, show live progress and a summary."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from .job import utcnow
from .queue import TaskQueue
from .result import Result
from .worker import Worker

DEMO_QUEUE = "sitq-demo"


async def fetch_page(n: int) -> dict[str, int]:
    """An async task: pretend to wait on I/O."""
    await asyncio.sleep(random.uniform(0.005, 0.05))
    return {"page": n, "items": n * 3 % 17}


def checksum(n: int) -> str:
    """A sync task (runs in a worker thread): some CPU work."""
    data = str(n).encode()
    for _ in range(2000):
        data = hashlib.sha256(data).digest()
    return data.hex()[:12]


def divide(a: int, b: int) -> float:
    """Fails when b == 0 — the demo's failing job, with its remote traceback."""
    return a / b


async def remind(message: str) -> str:
    """Runs at its ETA, a couple of seconds after the rest."""
    return f"reminder: {message}"


def run_demo(backend: str | None = None, jobs: int = 300) -> int:
    return asyncio.run(_demo(backend, max(jobs, 4)))


async def _demo(backend: str | None, jobs: int) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console()
    queue = TaskQueue(backend)
    await queue.connect()
    try:
        await queue.purge([DEMO_QUEUE])
        q = queue.options(queue=DEMO_QUEUE)
        console.print(f"[bold]sitq demo[/bold] on [cyan]{queue.backend.url}[/cyan] "
                      f"(queue {DEMO_QUEUE!r})")
        started = time.perf_counter()
        eta = utcnow() + timedelta(seconds=2)
        half = (jobs - 3) // 2
        ids: list[str] = []
        ids += await q.enqueue_many(fetch_page, [(i,) for i in range(half)])
        ids += await q.enqueue_many(checksum, [(i,) for i in range(jobs - 3 - half)])
        failing = await q.enqueue(divide, 1, 0)
        scheduled = await q.enqueue(remind, "the ETA job ran on time", eta=eta)
        by_value = await q.enqueue(lambda x: x * 2, 21)  # a lambda travels by value
        ids += [failing, scheduled, by_value]
        console.print(f"enqueued {len(ids)} jobs in {time.perf_counter() - started:.2f}s "
                      f"(async, sync, one failing, one with an ETA, one lambda)")

        worker = Worker(queue.backend, queues=[DEMO_QUEUE], concurrency=20, handle_signals=False)
        columns = (TextColumn("[bold blue]running jobs"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
        run_started = time.perf_counter()
        async with worker:
            with Progress(*columns, console=console) as progress:
                bar = progress.add_task("jobs", total=len(ids), detail="")
                while True:
                    c = worker.counters
                    done = c.succeeded + c.failed
                    progress.update(bar, completed=done,
                                    detail=f"[green]{c.succeeded} ok[/green] "
                                           f"[red]{c.failed} failed[/red]")
                    if done >= len(ids):
                        break
                    await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - run_started
        results: list[Result[Any]] = []
        for job_id in ids:
            result = await queue.get_result(job_id, timeout=10)
            assert result is not None, f"job {job_id} has no result"
            results.append(result)
    finally:
        await queue.aclose()

    _summary(console, Table, results, elapsed, failing, scheduled, by_value)
    return 0


def _summary(console: Any, table_cls: Any, results: list[Result[Any]], elapsed: float,
             failing: str, scheduled: str, by_value: str) -> None:
    per_task: Counter[tuple[str, str]] = Counter(
        ((r.task or "?").split(":")[-1], r.status) for r in results
    )
    table = table_cls(title="results by task")
    for col in ("task", "success", "failed"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for name in sorted({t for t, _ in per_task}):
        table.add_row(name, str(per_task[(name, "success")]), str(per_task[(name, "failed")]))
    console.print(table)
    ok = sum(1 for r in results if r.status == "success")
    console.print(f"{len(results)} jobs finished in {elapsed:.2f}s "
                  f"({len(results) / elapsed:.0f} jobs/s): {ok} succeeded, "
                  f"{len(results) - ok} failed")
    by_id = {r.id: r for r in results}
    bad = by_id[failing]
    tb_tail = (bad.traceback or "").strip().splitlines()[-3:]
    console.print(f"[red]failed job[/red] {failing}: {bad.error}")
    for line in tb_tail:
        console.print(f"    {line}", markup=False, highlight=False)
    eta_job = by_id[scheduled]
    console.print(f"[cyan]ETA job[/cyan] {scheduled}: {eta_job.value!r}, started "
                  f"{eta_job.started_at:%H:%M:%S.%f} UTC" if eta_job.started_at else "")
    console.print(f"[cyan]lambda job[/cyan] {by_value}: value {by_id[by_value].value!r}")
    console.print(f"inspect any job with: [bold]sitq inspect {failing}[/bold]")
