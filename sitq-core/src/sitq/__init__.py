"""sitq: an async-first task queue with pluggable backends, serializers and workers."""

from .backend import Backend, Finish, QueueStats
from .chain import Chain
from .context import ContextPropagator, ContextVarsPropagator, ContextWrapper
from .errors import (
    BackendError,
    BackendUnavailable,
    Cancelled,
    ChainFailed,
    ConfigurationError,
    InvalidArguments,
    InvalidCron,
    InvalidDatetime,
    JobNotFound,
    NotInstalled,
    NotSupported,
    PayloadTooLarge,
    PluginError,
    SerializationError,
    SignatureError,
    SitqError,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    WorkerLost,
)
from .hookspecs import hookimpl
from .job import Job, JobOptions
from .queue import JobInfo, Task, TaskQueue
from .result import ErrorInfo, Result
from .serializers import Serializer
from .worker import JobCall, Worker, create_worker

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # SyncTaskQueue pulls in anyio's blocking portal: imported on first use only, so
    # async-only programs and `sitq worker` start faster.
    if name == "SyncTaskQueue":
        from .sync import SyncTaskQueue

        return SyncTaskQueue
    raise AttributeError(f"module 'sitq' has no attribute {name!r}")


__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Cancelled",
    "Chain",
    "ChainFailed",
    "ConfigurationError",
    "ContextPropagator",
    "ContextVarsPropagator",
    "ContextWrapper",
    "ErrorInfo",
    "Finish",
    "InvalidArguments",
    "InvalidCron",
    "InvalidDatetime",
    "Job",
    "JobCall",
    "JobInfo",
    "JobNotFound",
    "JobOptions",
    "NotInstalled",
    "NotSupported",
    "PayloadTooLarge",
    "PluginError",
    "QueueStats",
    "Result",
    "SerializationError",
    "Serializer",
    "SignatureError",
    "SitqError",
    "SyncTaskQueue",
    "Task",
    "TaskFailed",
    "TaskNotFound",
    "TaskQueue",
    "TaskTimeout",
    "Worker",
    "WorkerLost",
    "__version__",
    "create_worker",
    "hookimpl",
]
