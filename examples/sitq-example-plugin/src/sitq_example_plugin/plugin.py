"""The plugin module named by the ``sitq`` entry point: it only registers factories."""

from __future__ import annotations

from typing import Any

import sitq


def example_backend(url: str, **options: Any) -> sitq.Backend:
    from .backend import ExampleBackend

    return ExampleBackend.from_url(url, **options)


@sitq.hookimpl
def sitq_register_backends(register: Any) -> None:
    register("example", example_backend)
