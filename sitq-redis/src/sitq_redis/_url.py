"""Redis URLs: the sitq schemes to what redis-py understands, and a form safe to show."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sitq.errors import ConfigurationError


def _redis_url(url: str) -> tuple[str, str]:
    """The URL redis-py understands, and a form safe to show (no password)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "redis+unix":
        parts = parts._replace(scheme="unix")
    elif scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            f"not a Redis URL: {url!r}; use redis://host:6379/0, rediss://host:6380/0 or "
            "redis+unix:///path/to/redis.sock?db=0"
        )
    shown = parts
    if parts.password:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        shown = parts._replace(netloc=f"{user}:***@{netloc}")
    return _join(parts), _join(shown)


def _join(parts: Any) -> str:
    if parts.scheme == "unix":  # urlunsplit would drop the empty authority: unix:/path
        query = f"?{parts.query}" if parts.query else ""
        return f"unix://{parts.netloc}{parts.path}{query}"
    return str(urlunsplit(parts))
