"""``postgresql://`` URLs: sitq's own query options split from asyncpg's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sitq.errors import ConfigurationError

from ._schema import check_schema_name

__all__ = ["PostgresOptions", "parse_url", "safe_url"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(slots=True)
class PostgresOptions:
    """sitq's options of a PostgreSQL backend (``?name=value`` in the URL, or keywords).

    ``schema``: where sitq's tables live (created on first connect). ``migrate``: bring
    the schema up to date on connect (else a schema that is behind is an error).
    ``min_size``/``max_size``: the connection pool (the listening connection is extra).
    ``command_timeout``: seconds before a statement that got no answer fails.
    ``connect_timeout``: seconds to open a connection. ``prune_interval``: seconds
    between deletions of expired results and dead letters by a claiming backend (0:
    never). ``keepalive``: seconds between pings of the listening connection.
    """

    schema: str = "sitq"
    migrate: bool = True
    min_size: int = 1
    max_size: int = 10
    command_timeout: float | None = 30.0
    connect_timeout: float = 5.0
    prune_interval: float = 60.0
    keepalive: float = 15.0
    connect_options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        check_schema_name(self.schema)
        if not (isinstance(self.min_size, int) and 0 <= self.min_size <= self.max_size):
            raise ConfigurationError(
                f"min_size must be an int between 0 and max_size ({self.max_size}), "
                f"got {self.min_size!r}"
            )
        if not (isinstance(self.max_size, int) and self.max_size >= 1):
            raise ConfigurationError(f"max_size must be an int >= 1, got {self.max_size!r}")
        for name in ("connect_timeout", "keepalive"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"{name} must be seconds > 0, got {value!r}")
        if self.command_timeout is not None and self.command_timeout <= 0:
            raise ConfigurationError(
                f"command_timeout must be seconds > 0 (or 0 for none), got {self.command_timeout!r}"
            )
        if self.prune_interval < 0:
            raise ConfigurationError(
                f"prune_interval must be seconds >= 0 (0: never), got {self.prune_interval!r}"
            )


_CONVERT: dict[str, Any] = {
    "min_size": int,
    "max_size": int,
    "command_timeout": lambda v: float(v) or None,
    "connect_timeout": float,
    "prune_interval": float,
    "keepalive": float,
}


def _flag(name: str, value: str, url: str) -> bool:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigurationError(f"{name}= in {safe_url(url)!r} must be true or false, got {value!r}")


def parse_url(url: str, options: dict[str, Any]) -> tuple[str, PostgresOptions]:
    """The DSN for asyncpg (sitq's query options removed) and sitq's options: keywords
    given in ``options`` win over the URL's query."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"not a PostgreSQL URL: {safe_url(url)!r}; use postgresql://user@host:5432/db"
        )
    known = {f for f in PostgresOptions.__dataclass_fields__ if f != "connect_options"}
    values: dict[str, Any] = {}
    rest = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "schema":
            values["schema"] = value
        elif name == "migrate":
            values["migrate"] = _flag(name, value, url)
        elif name in _CONVERT:
            try:
                values[name] = _CONVERT[name](value)
            except ValueError:
                raise ConfigurationError(
                    f"{name}= in {safe_url(url)!r} must be a number, got {value!r}"
                ) from None
        else:
            rest.append((name, value))
    for name in list(options):
        if name in known:
            values[name] = options.pop(name)
    opts = PostgresOptions(**values, connect_options=options)
    opts.check()
    dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest)))
    return dsn, opts


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
