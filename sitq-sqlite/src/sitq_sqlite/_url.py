"""Parsing ``sqlite:///...`` URLs (SQLAlchemy's forms) and their query options."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from sitq.errors import ConfigurationError

__all__ = ["DEFAULT_BUSY_TIMEOUT", "OPTIONS", "SYNCHRONOUS", "SQLiteOptions", "parse_url"]

#: A step waits 4 x this many milliseconds (at least 20 s) for the write lock.
DEFAULT_BUSY_TIMEOUT = 5000
#: Accepted values of ``synchronous`` (SQLite's PRAGMA synchronous).
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: The query options a URL may carry, with what they mean.
OPTIONS = {
    "busy_timeout": "milliseconds; a step waits 4x this, at least 20 s, for the write lock"
    " (integer >= 0, default 5000)",
    "synchronous": "OFF, NORMAL (default) or FULL/EXTRA (survives power loss)",
}

_EXAMPLES = "sqlite:///relative/path.db or sqlite:////absolute/path.db"


@dataclass(frozen=True, slots=True)
class SQLiteOptions:
    """The connection settings of one SQLite backend."""

    path: str
    busy_timeout: int = DEFAULT_BUSY_TIMEOUT
    synchronous: str = "NORMAL"


def check_busy_timeout(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or (isinstance(value, float) and value != number) or number < 0:
        raise ConfigurationError(
            f"busy_timeout must be a whole number of milliseconds >= 0, got {value!r} "
            "(e.g. sqlite:///sitq.db?busy_timeout=10000)"
        )
    return number


def check_synchronous(value: Any) -> str:
    text = str(value).strip().upper()
    if text not in SYNCHRONOUS:
        raise ConfigurationError(
            f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {value!r}; use FULL "
            "for durability across power loss, NORMAL (the default) otherwise"
        )
    return text


def parse_url(url: str) -> SQLiteOptions:
    """Parse ``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` plus query options.

    The path is resolved against the current directory now, so a later ``chdir`` does
    not move the queue. In-memory databases and hosts are refused: they cannot be shared
    by a producer and a worker (use ``memory://`` for an in-process queue).
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"a SQLite URL must be a string, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"not a SQLite URL: {url!r}; use {_EXAMPLES}")
    if parts.netloc:
        raise ConfigurationError(
            f"SQLite URLs have no host, but {url!r} names {parts.netloc!r}; use {_EXAMPLES} "
            "(three slashes before a relative path, four before an absolute one)"
        )
    if parts.fragment:
        raise ConfigurationError(f"unexpected '#{parts.fragment}' in SQLite URL {url!r}")
    raw = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if not raw or raw.endswith("/"):
        raise ConfigurationError(
            f"SQLite URL {url!r} names no database file; use {_EXAMPLES}"
        )
    if raw == ":memory:" or raw.startswith("file:") or "mode=memory" in parts.query:
        raise ConfigurationError(
            f"{url!r}: an in-memory SQLite database is private to one connection, so a "
            "producer and a worker could never share it. Use a file path "
            f"({_EXAMPLES}), or memory:// for an in-process queue in tests"
        )
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in options:
            raise ConfigurationError(f"option {name!r} is given twice in {url!r}")
        options[name] = value
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in OPTIONS.items())
        raise ConfigurationError(
            f"unknown SQLite URL option(s) {', '.join(unknown)} in {url!r}. Supported: {known}"
        )
    return SQLiteOptions(
        path=os.path.abspath(raw),
        busy_timeout=check_busy_timeout(options.get("busy_timeout", DEFAULT_BUSY_TIMEOUT)),
        synchronous=check_synchronous(options.get("synchronous", "NORMAL")),
    )
