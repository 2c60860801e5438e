"""The sitq exception hierarchy.

Every exception sitq raises derives from :class:`SitqError`. Errors about a bad value
also derive from the matching builtin, so ``except ValueError`` keeps working::

    SitqError
    ├── ConfigurationError (ValueError)       bad setting, bad URL, bad option value
    │   ├── InvalidDatetime (ValueError)      a naive datetime, an ETA that is not a datetime
    │   └── InvalidCron (ValueError)          a cron expression croniter does not accept
    ├── PluginError                           a plugin failed to load, or two claim one name
    │   └── NotInstalled (LookupError)        no plugin provides that backend/serializer/...
    ├── BackendError                          the store failed or cannot be reached
    │   ├── BackendUnavailable (ConnectionError)
    │   └── NotSupported                      the backend lacks a capability that was asked for
    ├── SerializationError (ValueError)       cannot serialize/deserialize a payload or result
    │   ├── PayloadTooLarge                   the payload exceeds ``max_payload``
    │   └── SignatureError                    unsigned or wrongly signed payload, refused unread
    ├── InvalidArguments (TypeError)          arguments that do not fit the task's signature
    ├── TaskNotFound (LookupError)            a task reference the worker cannot import
    ├── JobNotFound (LookupError)             ``get_result``/``inspect``/``cancel`` of an unknown id
    ├── TaskFailed                            ``Result.unwrap()`` of a failed job
    ├── TaskTimeout                           stored as the error of a job that ran too long
    ├── WorkerLost                            stored when a job's lease expired too often
    ├── ChainFailed                           stored for the chain steps after a failed step
    └── Cancelled                             stored as the error of a cancelled job

Error *types* stored in a failed :class:`~sitq.Result` are plain strings
(``result.error.type == "TaskTimeout"``), so a client can read them without importing the
task's module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .result import Result

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "Cancelled",
    "ChainFailed",
    "ConfigurationError",
    "InvalidArguments",
    "InvalidCron",
    "InvalidDatetime",
    "JobNotFound",
    "NotInstalled",
    "NotSupported",
    "PayloadTooLarge",
    "PluginError",
    "SerializationError",
    "SignatureError",
    "SitqError",
    "TaskFailed",
    "TaskNotFound",
    "TaskTimeout",
    "WorkerLost",
]


class SitqError(Exception):
    """Base class of every sitq exception."""


class ConfigurationError(SitqError, ValueError):
    """A setting, URL or option has a value sitq cannot use."""


class InvalidDatetime(ConfigurationError):
    """A naive datetime (no tzinfo) or a value that is not a datetime was given."""


class InvalidCron(ConfigurationError):
    """A cron expression that croniter does not accept."""


class PluginError(SitqError):
    """A plugin could not be loaded, or two plugins registered the same name."""


class NotInstalled(PluginError, LookupError):
    """No installed plugin provides the backend, serializer, worker or propagator asked for."""


class BackendError(SitqError):
    """The store failed."""


class BackendUnavailable(BackendError, ConnectionError):
    """The store cannot be reached."""


class NotSupported(BackendError):
    """The backend does not support a feature that was asked for."""


class SerializationError(SitqError, ValueError):
    """A payload or result could not be serialized or deserialized."""


class PayloadTooLarge(SerializationError):
    """The serialized payload is larger than ``max_payload``."""


class SignatureError(SerializationError):
    """A payload is unsigned, or signed with a key that is not configured."""


class InvalidArguments(SitqError, TypeError):
    """The arguments of an enqueued call do not fit the task function's signature."""


class TaskNotFound(SitqError, LookupError):
    """The worker cannot import the task a job refers to."""


class JobNotFound(SitqError, LookupError):
    """No job with that id is known to the backend."""


class TaskTimeout(SitqError, TimeoutError):
    """A job ran past its ``timeout``."""


class WorkerLost(SitqError):
    """A job's lease expired ``max_lease_expiries`` times: its workers kept dying."""


class ChainFailed(SitqError):
    """An earlier step of the job's chain failed, so this step did not run."""


class Cancelled(SitqError):
    """The job was cancelled."""


class TaskFailed(SitqError):
    """Raised by :meth:`Result.unwrap` for a job that failed.

    ``str()`` gives the remote error; :attr:`remote_traceback` holds the traceback
    formatted in the worker, and :attr:`result` the whole :class:`~sitq.Result`.
    """

    def __init__(self, result: Result[Any]) -> None:
        self.result = result
        self.error = result.error
        self.remote_traceback = result.traceback or ""
        message = f"job {result.id} failed: {result.error}"
        if self.remote_traceback:
            message += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        super().__init__(message)
