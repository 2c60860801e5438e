"""sitq-sqlite's hook implementations (imports only sitq; the backend loads on use)."""

from __future__ import annotations

from typing import Any

import sitq


def _factory(url: str, **options: Any) -> sitq.Backend:
    try:
        import sqlite3  # noqa: F401  (the driver: Python's own module)
    except ImportError as exc:
        raise sitq.NotInstalled(
            "the SQLite backend needs Python's sqlite3 module, which this Python was "
            f"built without ({exc}); install a Python with sqlite3 (e.g. the OS package "
            "libsqlite3-dev before building it), or use another backend"
        ) from exc
    from .backend import SQLiteBackend

    return SQLiteBackend.from_url(url, **options)


@sitq.hookimpl
def sitq_register_backends(register: Any) -> None:
    register("sqlite", _factory)
