"""sitq-workers' hook implementations: the ``thread`` and ``process`` worker kinds."""

from __future__ import annotations

from typing import Any

import sitq


@sitq.hookimpl
def sitq_register_workers(register: Any) -> None:
    from .process import ProcessWorker
    from .thread import ThreadWorker

    register("thread", ThreadWorker)
    register("process", ProcessWorker)
