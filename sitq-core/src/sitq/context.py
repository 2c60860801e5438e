"""Context propagation: capture context when a job is enqueued, restore it around its run.

A propagator writes string entries into the job's ``headers`` (a str→str carrier readable
without deserializing the payload) and restores them in the worker::

    request_id = contextvars.ContextVar("request_id")
    ctx = ContextWrapper(ContextVarsPropagator(request_id), "opentelemetry")
    queue = TaskQueue("redis://...", context=ctx)
    worker = Worker("redis://...", context=ctx)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import orjson

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .plugins import Registry

__all__ = [
    "ContextPropagator",
    "ContextVarsPropagator",
    "ContextWrapper",
    "OpenTelemetryPropagator",
    "StructlogPropagator",
]


@runtime_checkable
class ContextPropagator(Protocol):
    """Moves one kind of context from the producer to the worker."""

    @property
    def name(self) -> str: ...

    def capture(self, carrier: MutableMapping[str, str]) -> None:
        """Write the current context into ``carrier`` (string keys and values)."""

    def restore(self, carrier: Mapping[str, str]) -> contextlib.AbstractContextManager[Any]:
        """A context manager that makes the captured context current while the job runs."""


class ContextVarsPropagator:
    """Carries chosen :class:`contextvars.ContextVar` values (JSON-encodable ones)."""

    name: ClassVar[str] = "contextvars"

    def __init__(self, *variables: contextvars.ContextVar[Any]) -> None:
        self.variables = {f"cv-{v.name}": v for v in variables}

    def capture(self, carrier: MutableMapping[str, str]) -> None:
        for key, var in self.variables.items():
            try:
                value = var.get()
            except LookupError:
                continue
            carrier[key] = orjson.dumps(value, default=str).decode()

    @contextlib.contextmanager
    def restore(self, carrier: Mapping[str, str]) -> Iterator[None]:
        tokens = []
        for key, var in self.variables.items():
            if key in carrier:
                tokens.append((var, var.set(orjson.loads(carrier[key]))))
        try:
            yield
        finally:
            for var, token in reversed(tokens):
                var.reset(token)


class StructlogPropagator:
    """Carries structlog's context variables (``structlog.contextvars.bind_contextvars``)."""

    name: ClassVar[str] = "structlog"

    def __init__(self) -> None:
        try:
            import structlog.contextvars as scv
        except ImportError as exc:
            raise ConfigurationError(
                "the 'structlog' context propagator needs structlog; pip install structlog"
            ) from exc
        self._scv = scv

    def capture(self, carrier: MutableMapping[str, str]) -> None:
        values = self._scv.get_contextvars()
        if values:
            carrier["structlog"] = orjson.dumps(values, default=str).decode()

    @contextlib.contextmanager
    def restore(self, carrier: Mapping[str, str]) -> Iterator[None]:
        raw = carrier.get("structlog")
        if not raw:
            yield
            return
        tokens = self._scv.bind_contextvars(**orjson.loads(raw))
        try:
            yield
        finally:
            self._scv.reset_contextvars(**tokens)


class OpenTelemetryPropagator:
    """W3C trace context (``traceparent``/``tracestate``) through opentelemetry-api."""

    name: ClassVar[str] = "opentelemetry"

    def __init__(self) -> None:
        try:
            from opentelemetry import context as otel_context
            from opentelemetry import propagate
        except ImportError as exc:
            raise ConfigurationError(
                "the 'opentelemetry' context propagator needs opentelemetry-api; "
                "pip install 'sitq-core[opentelemetry]'"
            ) from exc
        self._propagate = propagate
        self._context = otel_context

    def capture(self, carrier: MutableMapping[str, str]) -> None:
        self._propagate.inject(carrier)

    @contextlib.contextmanager
    def restore(self, carrier: Mapping[str, str]) -> Iterator[None]:
        token = self._context.attach(self._propagate.extract(dict(carrier)))
        try:
            yield
        finally:
            self._context.detach(token)


_NO_CONTEXT: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


class ContextWrapper:
    """The configured propagators, used by both :class:`TaskQueue` and :class:`Worker`.

    Accepts propagator objects or registered names (``"opentelemetry"``).
    """

    def __init__(
        self, *propagators: ContextPropagator | str, registry: Registry | None = None
    ) -> None:
        resolved: list[ContextPropagator] = []
        for item in propagators:
            if isinstance(item, str):
                if registry is None:
                    from .plugins import get_registry

                    registry = get_registry()
                resolved.append(registry.propagator(item))
            elif isinstance(item, ContextPropagator):
                resolved.append(item)
            else:
                raise ConfigurationError(
                    f"context propagators must be names or ContextPropagator objects, "
                    f"got {item!r}"
                )
        self.propagators = tuple(resolved)

    def __bool__(self) -> bool:
        return bool(self.propagators)

    def capture(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        for propagator in self.propagators:
            propagator.capture(carrier)
        return carrier

    def restore(self, carrier: Mapping[str, str]) -> contextlib.AbstractContextManager[None]:
        """Restore every propagator's context from ``carrier`` around a job."""
        if not self.propagators:
            return _NO_CONTEXT  # the common case, on every job: no generator, no ExitStack
        return self._restore(carrier)

    @contextlib.contextmanager
    def _restore(self, carrier: Mapping[str, str]) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for propagator in self.propagators:
                stack.enter_context(propagator.restore(carrier))
            yield

    @classmethod
    def coerce(
        cls, value: ContextWrapper | list[Any] | tuple[Any, ...] | None, registry: Registry
    ) -> ContextWrapper:
        if value is None:
            return cls()
        if isinstance(value, ContextWrapper):
            return value
        return cls(*value, registry=registry)
