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
from .sync import SyncTaskQueue
from .worker import JobCall, Worker, create_worker

__version__ = "0.1.0"

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
