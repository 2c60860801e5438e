"""Plugin discovery and lookup by name.

Core's own hook implementations (``sitq._builtin``) are registered first, then every
entry point of the ``sitq`` group is loaded on its own, so one broken plugin is reported
and skipped instead of breaking the others. ``SITQ_DISABLE_PLUGINS=a,b`` skips plugins by
entry-point name.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import pluggy

from . import hookspecs
from .errors import ConfigurationError, NotInstalled, PluginError

if TYPE_CHECKING:
    from .backend import Backend
    from .context import ContextPropagator
    from .hookspecs import BackendFactory
    from .serializers import Serializer
    from .worker import Worker

__all__ = ["PluginInfo", "Registry", "get_registry", "parse_scheme"]

log = logging.getLogger("sitq.plugins")

Kind = Literal["backend", "serializer", "worker", "context propagator"]

#: Which distribution provides a name we know of, for "pip install ..." hints.
KNOWN_PROVIDERS: dict[str, str] = {
    "sqlite": "sitq-sqlite",
    "redis": "sitq-redis",
    "rediss": "sitq-redis",
    "redis+unix": "sitq-redis",
    "unix": "sitq-redis",
    "postgresql": "sitq-postgres",
    "postgres": "sitq-postgres",
    "nats": "sitq-nats",
    "thread": "sitq-workers",
    "process": "sitq-workers",
    "opentelemetry": "sitq-core[opentelemetry]",
}


@dataclass(slots=True)
class Registration:
    name: str
    obj: Any
    plugin: str


@dataclass(slots=True)
class PluginInfo:
    """One discovered plugin: where it came from and what it registered (or why it failed)."""

    name: str
    distribution: str
    version: str
    module: str
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "registered": self.registered,
            "error": self.error,
        }


def parse_scheme(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"backend must be a URL like 'sqlite:///sitq.db' or 'redis://localhost:6379/0', "
            f"got {url!r}"
        )
    return url.split("://", 1)[0].lower()


class Registry:
    """Holds every registered backend, serializer, worker kind and propagator.

    Build a fresh one in tests (``Registry(entry_points=False)``) instead of mutating the
    process-wide :func:`get_registry`.
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        disabled: Iterable[str] | None = None,
        extra_plugins: Iterable[tuple[str, ModuleType | object]] = (),
    ) -> None:
        self.pm = pluggy.PluginManager("sitq")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self._tables: dict[Kind, dict[str, Registration]] = {
            "backend": {},
            "serializer": {},
            "worker": {},
            "context propagator": {},
        }
        self._conflicts: dict[tuple[Kind, str], list[str]] = {}
        self._serializers: dict[str, Serializer] = {}
        self._lock = threading.Lock()
        if disabled is None:
            disabled = [
                p.strip() for p in os.environ.get("SITQ_DISABLE_PLUGINS", "").split(",")
            ]
        self._disabled = {d for d in disabled if d}

        from . import _builtin

        self._add("sitq", _builtin, "sitq-core", _version("sitq-core"))
        if entry_points:
            for ep in metadata.entry_points(group="sitq"):
                if ep.name in self._disabled:
                    continue
                dist = ep.dist.name if ep.dist is not None else "?"
                version = ep.dist.version if ep.dist is not None else "?"
                try:
                    module = ep.load()
                except Exception as exc:
                    self._failed(ep.name, dist, version, ep.value, exc)
                    continue
                self._add(ep.name, module, dist, version)
        for name, module in extra_plugins:
            self._add(name, module, "(local)", "")

    # ------------------------------------------------------------------ loading
    def _failed(self, name: str, dist: str, version: str, module: str, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        log.warning("sitq plugin %r (%s %s) failed to load: %s", name, dist, version, error)
        self.plugins.append(PluginInfo(name, dist, version, module, error=error))

    def _add(self, name: str, module: Any, dist: str, version: str) -> None:
        info = PluginInfo(name, dist, version, getattr(module, "__name__", repr(module)))
        try:
            self.pm.register(module, name=name)
            self.pm.check_pending()
        except Exception as exc:
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            if isinstance(exc, pluggy.PluginValidationError):
                exc = PluginError(_unknown_hooks_message(name, module, exc))
            self._failed(name, dist, version, info.module, exc)
            return
        hook = self.pm.hook
        calls: list[tuple[Kind, Any]] = [
            ("backend", hook.sitq_register_backends),
            ("serializer", hook.sitq_register_serializers),
            ("worker", hook.sitq_register_workers),
            ("context propagator", hook.sitq_register_context_propagators),
        ]
        # Registrations are staged and applied only if every hook of the plugin succeeds,
        # so a plugin that fails half-way registers nothing.
        staged: list[tuple[Kind, str, Any]] = []
        try:
            for kind, caller in calls:
                impls = [i for i in caller.get_hookimpls() if i.plugin is module]
                for impl in impls:
                    impl.function(register=self._registrar(kind, name, staged))
        except Exception as exc:
            self.pm.unregister(module)
            self._failed(name, dist, version, info.module, exc)
            return
        for kind, key, obj in staged:
            self._commit(kind, key, obj, name)
            info.registered.setdefault(kind, []).append(key)
        self.plugins.append(info)

    def _registrar(
        self, kind: Kind, plugin: str, staged: list[tuple[Kind, str, Any]]
    ) -> Callable[[str, Any], None]:
        def register(name: str, obj: Any) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {plugin!r} registered a {kind} with no name")
            staged.append((kind, name.lower(), obj))

        return register

    def _commit(self, kind: Kind, key: str, obj: Any, plugin: str) -> None:
        table = self._tables[kind]
        existing = table.get(key)
        if existing is not None and existing.plugin != plugin:
            claimants = self._conflicts.setdefault((kind, key), [existing.plugin])
            if plugin not in claimants:
                claimants.append(plugin)
            log.warning(
                "%s %r is registered by both %r and %r", kind, key, existing.plugin, plugin
            )
        else:
            table[key] = Registration(key, obj, plugin)

    # ------------------------------------------------------------------ lookup
    def names(self, kind: Kind) -> list[str]:
        return sorted(self._tables[kind])

    def lookup(self, kind: Kind, name: str) -> Any:
        key = name.lower() if isinstance(name, str) else name
        conflict = self._conflicts.get((kind, key))
        if conflict:
            raise PluginError(
                f"{kind} {key!r} is registered by more than one plugin: "
                f"{', '.join(repr(p) for p in conflict)}; uninstall one of them or disable it "
                "with SITQ_DISABLE_PLUGINS=<plugin name>"
            )
        reg = self._tables[kind].get(key)
        if reg is None:
            raise NotInstalled(self._missing(kind, str(name)))
        return reg.obj

    def _missing(self, kind: Kind, name: str) -> str:
        installed = ", ".join(self.names(kind)) or "none"
        msg = f"{kind} {name!r} is not installed"
        provider = KNOWN_PROVIDERS.get(name.lower())
        if provider is not None:
            msg += f"; pip install {provider}"
        else:
            import difflib

            close = difflib.get_close_matches(name.lower(), self.names(kind), n=1)
            if close:
                msg += f"; did you mean {close[0]!r}?"
        msg += f" (installed {kind}s: {installed})"
        failed = [p for p in self.plugins if p.error]
        if failed:
            msg += ". Plugins that failed to load: " + "; ".join(
                f"{p.name} ({p.distribution}): {p.error}" for p in failed
            )
        return msg

    def backend(self, url: str, **options: Any) -> Backend:
        """Build the backend for ``url`` through the factory registered for its scheme."""
        scheme = parse_scheme(url)
        factory: BackendFactory = self.lookup("backend", scheme)
        try:
            return factory(url, **options)
        except ImportError as exc:  # the plugin's driver (or its own backend module) is missing
            plugin = self._tables["backend"][scheme].plugin
            dist = next((p.distribution for p in self.plugins if p.name == plugin), "?")
            raise NotInstalled(
                f"backend {scheme!r} (plugin {plugin!r} from {dist}) cannot import what it "
                f"needs: {type(exc).__name__}: {exc}. Reinstall it with its dependencies: "
                f"pip install --force-reinstall {dist}"
            ) from exc

    def resolve_backend(self, backend: object, url: str, result_ttl: float) -> tuple[Backend, bool]:
        """``backend`` as given (a :class:`Backend` instance: not owned) or built from
        ``url`` (``backend`` is ``None`` or that URL: owned, closed by its user)."""
        from .backend import Backend

        if isinstance(backend, Backend):
            return backend, False
        if backend is None or isinstance(backend, str):
            return self.backend(url, result_ttl=result_ttl), True
        raise ConfigurationError(
            f"backend must be a URL string or a Backend instance, got {backend!r}"
        )

    def serializer(self, name: str) -> Serializer:
        """The shared instance of serializer ``name``."""
        cached = self._serializers.get(name)
        if cached is not None:
            return cached
        with self._lock:
            if name not in self._serializers:
                self._serializers[name] = self.lookup("serializer", name)()
            return self._serializers[name]

    def worker_class(self, name: str) -> type[Worker]:
        cls: type[Worker] = self.lookup("worker", name)
        return cls

    def propagator(self, name: str) -> ContextPropagator:
        factory: Callable[[], ContextPropagator] = self.lookup("context propagator", name)
        return factory()


def _unknown_hooks_message(plugin: str, module: Any, exc: Exception) -> str:
    """Name the hook implementations that match no sitq hook, with a suggestion."""
    import difflib

    known = [n for n in dir(hookspecs) if n.startswith("sitq_")]
    unknown = [
        attr for attr in dir(module)
        if getattr(getattr(module, attr, None), "sitq_impl", None) is not None
        and attr not in known
    ]
    if not unknown:
        return f"plugin {plugin!r} is invalid: {exc}"
    parts = []
    for attr in unknown:
        text = f"unknown hook {attr!r}"
        close = difflib.get_close_matches(attr, known, n=1)
        if close:
            text += f"; did you mean {close[0]!r}?"
        parts.append(text)
    return (f"plugin {plugin!r} implements " + ", ".join(parts)
            + f" (sitq's hooks are: {', '.join(known)})")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = Registry()
    return _registry
