"""sitq-sqlite's hook implementations (imports only sitq; aiosqlite loads on use)."""

from __future__ import annotations

from typing import Any

import sitq


def _factory(url: str, **options: Any) -> sitq.Backend:
    from .backend import SQLiteBackend

    return SQLiteBackend.from_url(url, **options)


@sitq.hookimpl
def sitq_register_backends(register: Any) -> None:
    register("sqlite", _factory)
