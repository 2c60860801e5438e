"""The plugin contract: four hooks, each called once at start-up with a ``register`` callable.

A plugin is a module holding ``@sitq.hookimpl`` functions, named by an entry point in the
``sitq`` group::

    [project.entry-points.sitq]
    redis = "sitq_redis.plugin"

Hooks only *register* factories by name; nothing on the hot path calls a hook. Plugin
modules import only ``sitq``; a factory imports its driver when it is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .context import ContextPropagator
    from .serializers import Serializer
    from .worker import Worker

__all__ = [
    "BackendFactory",
    "RegisterBackend",
    "RegisterContextPropagator",
    "RegisterSerializer",
    "RegisterWorker",
    "hookimpl",
    "hookspec",
]

hookspec = pluggy.HookspecMarker("sitq")
hookimpl = pluggy.HookimplMarker("sitq")


class BackendFactory(Protocol):
    def __call__(self, url: str, **options: Any) -> Backend: ...


class RegisterBackend(Protocol):
    def __call__(self, scheme: str, factory: BackendFactory) -> None: ...


class RegisterSerializer(Protocol):
    def __call__(self, name: str, factory: Callable[[], Serializer]) -> None: ...


class RegisterWorker(Protocol):
    def __call__(self, name: str, worker_class: type[Worker]) -> None: ...


class RegisterContextPropagator(Protocol):
    def __call__(self, name: str, factory: Callable[[], ContextPropagator]) -> None: ...


@hookspec
def sitq_register_backends(register: RegisterBackend) -> None:
    """Register backend factories by URL scheme.

    :param register: ``register(scheme, factory)``; ``factory(url, **options)`` returns a
        :class:`~sitq.Backend`. Call it once per scheme (``redis``, ``rediss``, ...).
        ``TaskQueue("scheme://...")`` then builds the backend through the factory.
    """


@hookspec
def sitq_register_serializers(register: RegisterSerializer) -> None:
    """Register serializers by name.

    :param register: ``register(name, factory)``; ``factory()`` returns an object with
        ``name``, ``supports_callables``, ``dumps(obj) -> bytes`` and ``loads(bytes)``
        (the :class:`~sitq.serializers.Serializer` protocol).
    """


@hookspec
def sitq_register_workers(register: RegisterWorker) -> None:
    """Register worker kinds by name.

    :param register: ``register(name, worker_class)``; ``worker_class`` subclasses
        :class:`~sitq.Worker` and overrides ``_execute``. Selected by ``--kind NAME``.
    """


@hookspec
def sitq_register_context_propagators(register: RegisterContextPropagator) -> None:
    """Register context propagators by name.

    :param register: ``register(name, factory)``; ``factory()`` returns a
        :class:`~sitq.context.ContextPropagator`. Selected by name in
        ``ContextWrapper("name")`` or ``context = ["name"]`` in configuration.
    """
