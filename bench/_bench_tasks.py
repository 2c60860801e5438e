"""Task functions for bench/redis_bench.py, shared by every system measured.

``noop`` is a no-op that also notes, in process memory, when the first and the N-th call
happened (a few hundred nanoseconds); when the expected count is reached it writes both
times to the file named by BENCH_MARK_FILE, which is how the drain is timed.
"""

from __future__ import annotations

import os
import time

_expected = int(os.environ.get("BENCH_EXPECT", "0"))
_mark_file = os.environ.get("BENCH_MARK_FILE", "")
_count = 0
_first = 0.0


def _mark() -> None:
    global _count, _first
    _count += 1
    if _count == 1:
        _first = time.time()
    if _count == _expected and _mark_file:
        with open(_mark_file + ".tmp", "w") as fh:
            fh.write(f"{_first} {time.time()}")
        os.replace(_mark_file + ".tmp", _mark_file)


async def noop() -> None:
    _mark()


async def echo(x: int) -> int:
    return x
