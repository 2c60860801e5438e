"""The module the ``sitq`` entry point names: it registers the backend factory.

It imports only ``sitq``; aio-pika is imported when a backend is built, and a missing
driver is an error that says what to install.
"""

from __future__ import annotations

from typing import Any

import sitq
from sitq.errors import NotInstalled


def rabbitmq_backend(url: str, **options: Any) -> sitq.Backend:
    try:
        from .backend import RabbitMQBackend
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] not in ("aio_pika", "aiormq",
                                                                   "pamqp", "msgpack"):
            raise
        raise NotInstalled(
            f"the RabbitMQ backend needs aio-pika ({exc}); pip install sitq-rabbitmq  "
            "(or: pip install 'aio-pika>=10')"
        ) from exc
    return RabbitMQBackend.from_url(url, **options)


@sitq.hookimpl
def sitq_register_backends(register: Any) -> None:
    register("amqp", rabbitmq_backend)
    register("amqps", rabbitmq_backend)
