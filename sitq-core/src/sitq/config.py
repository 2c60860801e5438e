"""Settings: arguments > ``SITQ_<KEY>`` environment > ``[tool.sitq]`` in pyproject.toml.

The nearest ``pyproject.toml`` from the current directory upwards is read. Every key and
its default is listed in :class:`Settings`; an unknown key in ``[tool.sitq]`` or a value of
the wrong type is a clear :class:`~sitq.errors.ConfigurationError`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

__all__ = ["DEFAULTS", "Settings", "load_settings"]

DEFAULT_BACKEND = "sqlite:///sitq.db"


@dataclass(slots=True)
class Settings:
    backend: str = DEFAULT_BACKEND
    serializer: str = "cloudpickle"
    secret_key: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=lambda: ["default"])
    concurrency: int = 10
    kind: str = "async"
    lease: float = 30.0
    max_lease_expiries: int = 3
    result_ttl: float = 7 * 24 * 3600.0
    max_payload: int = 1024 * 1024
    app: str | None = None
    context: list[str] = field(default_factory=list)
    #: where each value came from: "default", "argument", "env SITQ_X", "pyproject.toml"
    sources: dict[str, str] = field(default_factory=dict)


DEFAULTS = Settings()


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _list(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list | tuple):
        items = [str(v).strip() for v in value]
    else:
        raise ValueError("must be a list of strings or a comma-separated string")
    return [v for v in items if v]


def _queues(key: str, value: Any) -> list[str]:
    queues = _list(key, value)
    if not queues:
        raise ValueError("must name at least one queue (e.g. default)")
    return queues


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool):  # int(True) == 1: a TOML `true` is not a count
        raise ValueError("must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("must be an integer") from None
    if isinstance(value, float) and value != number:
        raise ValueError("must be an integer")
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _positive_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number of seconds") from None
    if not number > 0:
        raise ValueError("must be greater than 0")
    return number


def _size(key: str, value: Any) -> int:
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        for suffix, factor in (("mib", 1 << 20), ("kib", 1 << 10), ("mb", 10**6), ("kb", 10**3)):
            if text.endswith(suffix):
                try:
                    return int(float(text[: -len(suffix)]) * factor)
                except ValueError:
                    break
    return _positive_int(key, value)


def _app(key: str, value: Any) -> str | None:
    return None if value in (None, "") else _str(key, value)


_COERCE: dict[str, Callable[[str, Any], Any]] = {
    "backend": _str,
    "serializer": _str,
    "secret_key": _list,
    "queues": _queues,
    "concurrency": _positive_int,
    "kind": _str,
    "lease": _positive_float,
    "max_lease_expiries": _positive_int,
    "result_ttl": _positive_float,
    "max_payload": _size,
    "app": _app,
    "context": _list,
}


def _suggest(unknown: list[str]) -> str:
    import difflib

    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, list(_COERCE), n=1)
        if close:
            hints.append(f"{close[0]!r}")
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def find_pyproject(start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def read_pyproject(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc
    section = data.get("tool", {}).get("sitq", {})
    if not isinstance(section, dict):
        raise ConfigurationError(f"[tool.sitq] in {path} must be a table")
    return section


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    pyproject: Path | bool | None = True,
) -> Settings:
    """Resolve every setting. ``overrides`` with value ``None`` are ignored (not given).

    ``pyproject=True`` searches upwards from the current directory; a path reads that
    file; ``False``/``None`` reads none.
    """
    env = os.environ if env is None else env
    file_values: dict[str, Any] = {}
    file_path: Path | None = None
    if pyproject is True:
        file_path = find_pyproject()
    elif isinstance(pyproject, Path):
        file_path = pyproject
    if file_path is not None:
        file_values = read_pyproject(file_path)
        unknown = sorted(set(file_values) - set(_COERCE))
        if unknown:
            raise ConfigurationError(
                f"unknown key(s) in [tool.sitq] of {file_path}: {', '.join(unknown)}"
                f"{_suggest(unknown)}; valid keys: {', '.join(sorted(_COERCE))}"
            )
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(_COERCE))
    if unknown:
        raise ConfigurationError(
            f"unknown setting(s) {', '.join(unknown)}{_suggest(unknown)}; "
            f"valid: {', '.join(sorted(_COERCE))}"
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, coerce in _COERCE.items():
        env_name = f"SITQ_{key.upper()}"
        if overrides.get(key) is not None:
            raw, source = overrides[key], "argument"
        elif env.get(env_name, "") != "":
            raw, source = env[env_name], f"env {env_name}"
        elif key in file_values:
            raw, source = file_values[key], f"[tool.sitq] {file_path}"
        else:
            sources[key] = "default"
            continue
        try:
            values[key] = coerce(key, raw)
        except ValueError as exc:
            shown = "<hidden>" if key == "secret_key" else repr(raw)
            raise ConfigurationError(f"setting {key!r} from {source} {exc}, got {shown}") from None
        sources[key] = source
    settings = Settings(**values)
    settings.sources = sources
    return settings


def setting_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings) if f.name != "sources"]
