"""Task functions for the Redis tests (importable by in-process workers)."""

from __future__ import annotations

import asyncio


async def record_slowly(path: str, token: str, seconds: float) -> str:
    """Append ``token`` to the execution log at ``path``, then sleep ``seconds``."""
    with open(path, "a") as fh:
        fh.write(token + "\n")
    await asyncio.sleep(seconds)
    return token
