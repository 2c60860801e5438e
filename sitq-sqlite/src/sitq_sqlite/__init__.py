"""SQLite backend for sitq: ``sqlite:///path.db`` (see docs/backends/sqlite.md).

``SQLiteBackend`` is imported on first use, so importing this package (as the plugin
manager does) does not load sqlite3. The driver is Python's own ``sqlite3`` module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import SchemaVersionError, SQLiteBackend

__all__ = ["SQLiteBackend", "SchemaVersionError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
