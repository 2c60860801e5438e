"""sitq-rabbitmq: a sitq backend on RabbitMQ (AMQP 0-9-1, aio-pika). See README.md."""

__all__ = ["RabbitMQBackend"]


def __getattr__(name: str) -> object:
    # The backend imports aio-pika; keep ``import sitq_rabbitmq`` free of it.
    if name == "RabbitMQBackend":
        from .backend import RabbitMQBackend

        return RabbitMQBackend
    raise AttributeError(name)
