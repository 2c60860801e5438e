"""Core's own hook implementations, registered first through the same plugin manager."""

from __future__ import annotations

from typing import Any

from .hookspecs import (
    RegisterBackend,
    RegisterContextPropagator,
    RegisterSerializer,
    RegisterWorker,
    hookimpl,
)


def _memory(url: str, **options: Any) -> Any:
    from .backends.memory import MemoryBackend

    return MemoryBackend.from_url(url, **options)


@hookimpl
def sitq_register_backends(register: RegisterBackend) -> None:
    register("memory", _memory)


@hookimpl
def sitq_register_serializers(register: RegisterSerializer) -> None:
    from .serializers import (
        CloudpickleSerializer,
        JsonSerializer,
        MsgpackSerializer,
        PickleSerializer,
    )

    register("cloudpickle", CloudpickleSerializer)
    register("pickle", PickleSerializer)
    register("json", JsonSerializer)
    register("msgpack", MsgpackSerializer)


@hookimpl
def sitq_register_workers(register: RegisterWorker) -> None:
    from .worker import Worker

    register("async", Worker)


@hookimpl
def sitq_register_context_propagators(register: RegisterContextPropagator) -> None:
    from .context import OpenTelemetryPropagator, StructlogPropagator

    register("opentelemetry", OpenTelemetryPropagator)
    register("structlog", StructlogPropagator)
