"""The huey side of bench/sqlite_bench.py: a SqliteHuey app with one no-op task.

The database file comes from ``SITQ_BENCH_HUEY_DB``. SQLite runs with
``synchronous=NORMAL`` (huey leaves SQLite's default, FULL, unless told), so both
queues are measured at the same durability as sitq's default. A signal handler writes
the time the first task starts to ``SITQ_BENCH_HUEY_START`` (one flag check per task).
"""

from __future__ import annotations

import os
import time

from huey import SqliteHuey
from huey.signals import SIGNAL_EXECUTING
from huey.storage import SqliteStorage


class NormalSyncStorage(SqliteStorage):
    def _create_connection(self):  # type: ignore[no-untyped-def]
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn


huey = SqliteHuey(
    "bench", filename=os.environ.get("SITQ_BENCH_HUEY_DB", "huey-bench.db"),
    storage_class=NormalSyncStorage,
)


@huey.task()
def noop() -> None:
    return None


_START_FILE = os.environ.get("SITQ_BENCH_HUEY_START")
_started = False


@huey.signal(SIGNAL_EXECUTING)
def _first_start(signal, task) -> None:  # type: ignore[no-untyped-def]
    """Record when the first task starts (the drain's start-up-free clock)."""
    global _started
    if not _started and _START_FILE:
        _started = True
        with open(_START_FILE, "w") as fh:
            fh.write(repr(time.time()))
