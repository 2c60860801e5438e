"""Redis backend for sitq: ``redis://``, ``rediss://`` and ``redis+unix://`` URLs.

``from sitq_redis import RedisBackend`` imports redis-py; the plugin module
(``sitq_redis.plugin``) does not.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DataLost", "RedisBackend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import backend

        return getattr(backend, name)
    raise AttributeError(name)
