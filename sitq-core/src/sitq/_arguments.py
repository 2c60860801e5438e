"""Checking a call's arguments against the task's signature when it is enqueued, so a
call that cannot work fails in the producer instead of on a worker."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidArguments
from .job import JobOptions

__all__ = ["Check", "arguments_checker"]

#: ``check(args, kwargs)`` raises :class:`InvalidArguments` for a call that does not fit.
Check = Callable[[tuple[Any, ...] | list[Any], Mapping[str, Any]], None]

_OPTIONS = frozenset(f.name for f in dataclasses.fields(JobOptions))
_P = inspect.Parameter


def _accept(args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any]) -> None:
    return None


def arguments_checker(func: Callable[..., Any]) -> Check:
    """The check for calls of ``func`` (of the function under ``@queue.task``). A callable
    whose signature Python cannot read (some builtins) is not checked."""
    target = getattr(func, "__sitq_func__", func)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return _accept
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)]
    low = sum(1 for p in positional if p.default is _P.empty)
    high = None if any(p.kind is _P.VAR_POSITIONAL for p in params) else len(positional)
    # Without keyword arguments, counting is enough unless a keyword-only one is required.
    countable = not any(p.kind is _P.KEYWORD_ONLY and p.default is _P.empty for p in params)
    name = getattr(target, "__name__", type(target).__name__)

    def check(args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any]) -> None:
        if not kwargs and countable and low <= len(args) and (high is None or len(args) <= high):
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArguments(_explain(name, sig, exc, args, kwargs, high)) from None

    return check


def _explain(
    name: str,
    sig: inspect.Signature,
    exc: TypeError,
    args: tuple[Any, ...] | list[Any],
    kwargs: Mapping[str, Any],
    high: int | None,
) -> str:
    problem = str(exc)
    if problem == "too many positional arguments":
        problem = f"takes {high} positional argument{'s' if high != 1 else ''} but {len(args)} " \
                  "were given"
    text = f"{name}() {problem}"
    unexpected = [k for k in kwargs if k not in sig.parameters]
    options = [k for k in unexpected if k in _OPTIONS]
    if options and not any(p.kind is _P.VAR_KEYWORD for p in sig.parameters.values()):
        shown = ", ".join(f"{k}={kwargs[k]!r}" for k in options)
        text += (f": job options go through queue.options({shown}).enqueue(...); enqueue() "
                 "passes its keyword arguments to the task")
    else:
        for key in unexpected:
            close = difflib.get_close_matches(key, list(sig.parameters), n=1)
            if close:
                text += f"; did you mean {close[0]!r}?"
    return f"{text} (the task's signature is {name}{sig})"
