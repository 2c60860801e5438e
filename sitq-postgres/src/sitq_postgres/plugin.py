"""sitq-postgres's hook implementations (imports only sitq; asyncpg loads on use)."""

from __future__ import annotations

from typing import Any

import sitq
from sitq.errors import NotInstalled


def _factory(url: str, **options: Any) -> sitq.Backend:
    try:
        from .backend import PostgresBackend
    except ImportError as exc:
        if exc.name is None or exc.name.split(".")[0] != "asyncpg":
            raise
        raise NotInstalled(
            f"the PostgreSQL backend needs the asyncpg driver ({exc}); "
            "pip install sitq-postgres  (or: pip install 'asyncpg>=0.28')"
        ) from exc
    return PostgresBackend.from_url(url, **options)


@sitq.hookimpl
def sitq_register_backends(register: Any) -> None:
    for scheme in ("postgresql", "postgres"):
        register(scheme, _factory)
