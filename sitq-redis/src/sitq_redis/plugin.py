"""sitq-redis's hook implementations (imports only sitq; redis-py loads on use)."""

from __future__ import annotations

from typing import Any

import sitq
from sitq.errors import NotInstalled


def _factory(url: str, **options: Any) -> sitq.Backend:
    try:
        from .backend import RedisBackend
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] not in ("redis", "hiredis"):
            raise
        raise NotInstalled(
            f"the Redis backend needs the redis client library ({exc}); "
            "pip install sitq-redis  (or: pip install 'redis>=5')"
        ) from exc
    return RedisBackend.from_url(url, **options)


@sitq.hookimpl
def sitq_register_backends(register: Any) -> None:
    for scheme in ("redis", "rediss", "redis+unix"):
        register(scheme, _factory)
