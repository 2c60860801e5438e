"""Thread and process worker kinds for sitq (``--kind thread``, ``--kind process``)."""

from .process import ProcessCrashed, ProcessWorker
from .thread import ThreadWorker

__all__ = ["ProcessCrashed", "ProcessWorker", "ThreadWorker"]
