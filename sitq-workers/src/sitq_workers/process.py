"""ProcessWorker: every job runs in a child process of the worker's pool.

A job that overruns its ``timeout`` (or is cancelled) has its process killed and replaced;
a job that crashes its process (segfault, ``os._exit``, OOM kill) ends ``failed`` with
:class:`ProcessCrashed` and the worker carries on with a fresh process. A child whose
worker dies (even by SIGKILL) exits within a second instead of running its job on: that
job runs again elsewhere once its lease expires. Children are
started with the ``spawn`` method (no fork of a running event loop) on first use, up to
``concurrency`` of them, and reused for later jobs.

The call travels to the child through cloudpickle (module-level functions by reference,
so the child imports them: run the worker from your project directory or pass ``--app``).
Context propagators are restored in the worker process, not inside the child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, ClassVar

import cloudpickle

from sitq import ErrorInfo, JobCall, SitqError, Worker
from sitq.worker import import_app, run_to_completion

__all__ = ["ProcessCrashed", "ProcessWorker"]


class ProcessCrashed(SitqError):
    """The child process running a job died (crash, ``os._exit``, killed from outside)."""


class _Relayed(Exception):
    """An exception raised in the child, carried back with its type and traceback."""

    def __init__(self, info: ErrorInfo, tb: str | None) -> None:
        super().__init__(info.message)
        self.__sitq_error__ = info
        self.__sitq_traceback__ = tb


#: How often (seconds) a child checks that its worker is still alive.
PARENT_CHECK_INTERVAL = 0.5


def _watch_parent(parent: int) -> None:
    """Exit the child as soon as the worker that started it is gone (an orphan would run
    a job that another worker is about to run again)."""
    while True:
        time.sleep(PARENT_CHECK_INTERVAL)
        if os.getppid() != parent:
            os._exit(70)


def _child_main(conn: Connection, app: str | None, parent: int | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent worker handles Ctrl-C
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                         name="sitq-parent-watch").start()
    if app:
        import_app(app)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            value = run_to_completion(*cloudpickle.loads(data))
            try:
                out = cloudpickle.dumps(("ok", value))
            except Exception as exc:
                out = cloudpickle.dumps(("err", "SerializationError",
                                         f"the return value ({type(value).__name__}) could not "
                                         f"be sent back from the job's process: {exc}",
                                         "sitq.errors", None))
        except BaseException as exc:
            info = ErrorInfo.from_exception(exc)  # survives an exception whose str() raises
            try:
                tb: str | None = traceback.format_exc()
            except Exception:
                tb = None
            out = cloudpickle.dumps(("err", info.type, info.message, info.module, tb))
        conn.send_bytes(out)


class _Child:
    def __init__(self, ctx: Any, app: str | None) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.conn: Connection = parent
        self.process = ctx.Process(target=_child_main, args=(child, app, os.getpid()),
                                   daemon=True, name="sitq-job")
        self.process.start()
        child.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def describe_death(self) -> str:
        self.process.join(5)
        code = self.process.exitcode
        if code is None:
            return "stopped answering"
        if code < 0:
            try:
                return f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"


class ProcessWorker(Worker):
    """Runs each job in a child process; see the module docstring."""

    kind: ClassVar[str] = "process"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()
        self._io: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self) -> None:
        try:
            await super().start()
        finally:
            for child in list(self._all):
                await asyncio.to_thread(child.kill)
            self._all.clear()
            self._idle.clear()
            if self._io is not None:
                self._io.shutdown(wait=False, cancel_futures=True)

    def _acquire(self) -> _Child:
        while self._idle:
            child = self._idle.pop()
            if child.process.is_alive():
                return child
            self._discard(child)
        child = _Child(self._ctx, self.app)
        self._all.add(child)
        return child

    def _discard(self, child: _Child) -> None:
        self._all.discard(child)
        child.kill()

    async def _execute(self, call: JobCall) -> Any:
        loop = asyncio.get_running_loop()
        if self._io is None:
            self._io = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="sitq-proc-io"
            )
        data = cloudpickle.dumps((call.func, call.args, call.kwargs))
        child = self._acquire()
        healthy = False
        try:
            await loop.run_in_executor(self._io, child.conn.send_bytes, data)
            reply = await loop.run_in_executor(self._io, child.conn.recv_bytes)
            healthy = True
        except (EOFError, OSError, BrokenPipeError):
            how = await asyncio.to_thread(child.describe_death)
            raise ProcessCrashed(
                f"the process running {call.job.task} {how} (pid {child.process.pid}); it was "
                "replaced and the worker carries on"
            ) from None
        finally:
            if healthy:
                self._idle.append(child)
            else:
                # Timeout, cancel, shutdown or crash: the child is killed, never reused.
                await asyncio.shield(asyncio.to_thread(self._discard, child))
        status, *rest = cloudpickle.loads(reply)
        if status == "ok":
            return rest[0]
        kind, message, module, tb = rest
        raise _Relayed(ErrorInfo(kind, message, module), tb)
