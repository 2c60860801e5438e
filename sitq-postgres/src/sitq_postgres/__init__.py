"""PostgreSQL backend for sitq: ``postgresql://`` and ``postgres://`` URLs
(see docs/backends/postgres.md).

``PostgresBackend`` is imported on first use, so importing this package (as the plugin
manager does) does not load the asyncpg driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._schema import SchemaVersionError
    from .backend import PostgresBackend

__all__ = ["PostgresBackend", "SchemaVersionError"]


def __getattr__(name: str) -> Any:
    if name == "PostgresBackend":
        from .backend import PostgresBackend

        return PostgresBackend
    if name == "SchemaVersionError":
        from ._schema import SchemaVersionError

        return SchemaVersionError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
