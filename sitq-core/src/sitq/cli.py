"""The ``sitq`` command: worker, enqueue, inspect, plugins, demo.

Every option also reads its ``SITQ_*`` variable (and ``[tool.sitq]``), so
``SITQ_BACKEND=redis://... sitq worker --app myapp.tasks`` works.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .config import load_settings
from .errors import SitqError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitq", description="sitq: an async-first task queue with pluggable backends."
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def backend_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backend", help="backend URL (env SITQ_BACKEND; default "
                                         "sqlite:///sitq.db)")

    w = sub.add_parser("worker", help="run a worker")
    backend_opt(w)
    w.add_argument("--app", help="module to import for tasks and schedules (env SITQ_APP)")
    w.add_argument("--queue", "-q", action="append", dest="queues",
                   help="queue to consume (repeat for several; default 'default')")
    w.add_argument("--concurrency", "-c", type=int, help="jobs at once (default 10)")
    w.add_argument("--kind", help="worker kind: async (default), thread, process, ...")
    w.add_argument("--lease", type=float, help="lease in seconds (default 30)")
    w.add_argument("--scheduler", action="store_true", help="also run the cron scheduler")
    w.add_argument("--burst", action="store_true", help="exit when nothing is left to do")

    e = sub.add_parser("enqueue", help="enqueue a call: sitq enqueue myapp.tasks.add '[1, 2]'")
    backend_opt(e)
    e.add_argument("task", help="import path of the function (module.function or module:function)")
    e.add_argument("args", nargs="?", default="[]",
                   help="JSON: a list of positional args or an object of keyword args")
    e.add_argument("--queue", "-q", help="queue name (default 'default')")
    e.add_argument("--wait", type=float, metavar="SECONDS",
                   help="wait up to SECONDS for the result and print it")

    i = sub.add_parser("inspect", help="queue depths, or one job's state and result")
    backend_opt(i)
    i.add_argument("job_id", nargs="?", help="a job id")
    i.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("plugins", help="list discovered plugins and what they registered")
    p.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add_parser("scheduler", help="run the cron scheduler alone (no jobs)")
    backend_opt(s)
    s.add_argument("--app", help="module that declares the schedules (env SITQ_APP)")

    ls = sub.add_parser("schedules", help="list the schedules an app declares")
    ls.add_argument("--app", help="module that declares the schedules (env SITQ_APP)")
    ls.add_argument("--json", action="store_true", help="print JSON")

    d = sub.add_parser("demo", help="enqueue a batch, run a worker, show progress and results")
    backend_opt(d)
    d.add_argument("--jobs", type=int, default=300, help="how many jobs (default 300)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except SitqError as exc:
        print(f"sitq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _add_cwd_to_path() -> None:
    """Tasks live in the user's project: like ``python -m``, import from the cwd."""
    import os

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _cmd_worker(args: argparse.Namespace) -> int:
    from .worker import create_worker

    _add_cwd_to_path()
    settings = load_settings(
        {
            "backend": args.backend,
            "app": args.app,
            "queues": args.queues,
            "concurrency": args.concurrency,
            "kind": args.kind,
            "lease": args.lease,
        }
    )
    worker = create_worker(settings.kind, settings=settings, burst=args.burst,
                           scheduler=args.scheduler)
    worker.backend.require("supports_multiprocess", "sitq worker")
    asyncio.run(worker.start())
    return 0


def _cmd_enqueue(args: argparse.Namespace) -> int:
    from ._codec import resolve_task
    from .queue import TaskQueue

    try:
        data = json.loads(args.args)
    except json.JSONDecodeError as exc:
        print(f"sitq enqueue: error: ARGS is not valid JSON ({exc}); pass e.g. '[1, 2]' or "
              "'{\"name\": \"x\"}'", file=sys.stderr)
        return 2
    if isinstance(data, list):
        call_args, call_kwargs = data, {}
    elif isinstance(data, dict):
        call_args, call_kwargs = [], data
    else:
        print("sitq enqueue: error: ARGS must be a JSON list (positional) or object (keyword)",
              file=sys.stderr)
        return 2
    name = args.task if ":" in args.task else ":".join(args.task.rsplit(".", 1))
    _add_cwd_to_path()
    func = resolve_task(name)

    async def run() -> int:
        async with TaskQueue(args.backend) as queue:
            queue.backend.require("supports_multiprocess", "sitq enqueue")
            job_id = await queue.options(queue=args.queue).enqueue(func, *call_args,
                                                                   **call_kwargs)
            print(job_id)
            if args.wait is not None:
                result = await queue.get_result(job_id, timeout=args.wait)
                if result is None:
                    print(f"not finished after {args.wait}s", file=sys.stderr)
                    return 1
                if result.status == "failed":
                    print(f"failed: {result.error}\n{result.traceback or ''}", file=sys.stderr)
                    return 1
                print(json.dumps(result.value, default=repr))
        return 0

    return asyncio.run(run())


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .queue import TaskQueue

    console = Console()

    async def run() -> int:
        async with TaskQueue(args.backend) as queue:
            queue.backend.require("supports_multiprocess", "sitq inspect")
            if args.job_id is None:
                stats = await queue.stats()
                if args.json:
                    print(json.dumps({q: s.as_dict() for q, s in sorted(stats.items())}))
                    return 0
                table = Table(title=f"queues on {queue.backend.url}")
                for col in ("queue", "queued", "scheduled", "running", "failed"):
                    table.add_column(col, justify="left" if col == "queue" else "right")
                for name, s in sorted(stats.items()):
                    table.add_row(name, str(s.queued), str(s.scheduled), str(s.running),
                                  str(s.failed))
                console.print(table)
                return 0
            info = await queue.inspect(args.job_id)
            data = _info_dict(info)
            if args.json:
                print(json.dumps(data, default=str))
            else:
                table = Table(show_header=False, title=f"job {info.id}")
                for key, value in data.items():
                    if value is not None:
                        table.add_row(key, str(value))
                console.print(table)
        return 0

    return asyncio.run(run())


def _info_dict(info: Any) -> dict[str, Any]:
    result = info.result
    return {
        "id": info.id,
        "state": info.state,
        "task": info.task,
        "queue": info.queue,
        "attempts": info.attempts,
        "eta": info.eta,
        "created_at": info.created_at,
        "lease_until": info.lease_until,
        "worker": info.worker,
        "value": repr(result.value) if result is not None and result.ok else None,
        "error": str(result.error) if result is not None and result.error else None,
        "traceback": result.traceback if result is not None else None,
    }


def _cmd_plugins(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .plugins import get_registry

    registry = get_registry()
    if args.json:
        print(json.dumps([p.as_dict() for p in registry.plugins], indent=2))
        return 0
    table = Table(title="sitq plugins")
    for col in ("plugin", "distribution", "version", "registered"):
        table.add_column(col)
    for p in registry.plugins:
        if p.error:
            registered = f"[red]failed to load: {p.error}[/red]"
        else:
            registered = "\n".join(f"{kind}s: {', '.join(names)}"
                                   for kind, names in p.registered.items())
        table.add_row(p.name, p.distribution, p.version, registered)
    Console().print(table)
    return 0


def _cmd_scheduler(args: argparse.Namespace) -> int:
    import signal

    from .queue import TaskQueue
    from .scheduling import Scheduler
    from .worker import import_app

    settings = load_settings({"backend": args.backend, "app": args.app})
    if not settings.app:
        print("sitq scheduler: error: pass --app MODULE (or SITQ_APP) naming the module that "
              "declares the schedules", file=sys.stderr)
        return 2
    import_app(settings.app)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with TaskQueue(settings=settings) as queue:
            queue.backend.require("supports_multiprocess", "sitq scheduler")
            await Scheduler(queue).run(stop)

    asyncio.run(run())
    return 0


def _cmd_schedules(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ._codec import task_name
    from .job import utcnow
    from .scheduling import declared_schedules
    from .worker import import_app

    settings = load_settings({"app": args.app})
    if settings.app:
        import_app(settings.app)
    now = utcnow()
    rows = [
        {"name": s.name, "cron": s.expression, "tz": s.tz, "task": task_name(s.func),
         "queue": s.options.queue or s.default_queue or "default",
         "next": s.next_after(now).isoformat()}
        for s in declared_schedules()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no schedules declared" + ("" if settings.app else " (pass --app MODULE)"))
        return 0
    table = Table(title="schedules")
    for col in rows[0]:
        table.add_column(col)
    for row in rows:
        table.add_row(*row.values())
    Console().print(table)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    # The summary reports every outcome, including the deliberate failure.
    logging.getLogger("sitq").setLevel(logging.CRITICAL)
    return run_demo(backend=args.backend, jobs=args.jobs)


_COMMANDS = {
    "worker": _cmd_worker,
    "enqueue": _cmd_enqueue,
    "inspect": _cmd_inspect,
    "plugins": _cmd_plugins,
    "scheduler": _cmd_scheduler,
    "schedules": _cmd_schedules,
    "demo": _cmd_demo,
}
