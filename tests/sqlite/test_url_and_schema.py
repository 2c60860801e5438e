"""URL parsing, connection settings, the versioned schema and lock handling."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sitq import BackendError, BackendUnavailable, ConfigurationError, NotInstalled
from sitq.plugins import get_registry
from sitq.testing import make_job
from sitq_sqlite import SchemaVersionError, SQLiteBackend
from sitq_sqlite._schema import MIGRATIONS
from sitq_sqlite._url import parse_url

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


# ---------------------------------------------------------------------------- URLs
def test_relative_and_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_url("sqlite:///tasks.db").path == str(tmp_path / "tasks.db")
    assert parse_url("sqlite:///data/tasks.db").path == str(tmp_path / "data" / "tasks.db")
    assert parse_url("sqlite:////var/lib/app/q.db").path == "/var/lib/app/q.db"
    assert parse_url("sqlite:////tmp/my%20queue.db").path == "/tmp/my queue.db"
    assert parse_url("SQLITE:////tmp/q.db").path == "/tmp/q.db"


async def test_backend_instance_with_a_relative_path(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """DESIGN 3: TaskQueue(backend=SQLiteBackend(...)) - a bare file name is the natural
    first thing to pass, and must mean a file in the current directory, as in the URL."""
    monkeypatch.chdir(tmp_path)
    backend = SQLiteBackend("tasks.db")
    async with backend:
        await backend.enqueue(make_job("default"))
    assert (tmp_path / "tasks.db").exists()
    assert backend.path == str(tmp_path / "tasks.db")


def test_query_options() -> None:
    opts = parse_url("sqlite:////tmp/q.db?busy_timeout=250&synchronous=full")
    assert (opts.busy_timeout, opts.synchronous) == (250, "FULL")
    defaults = parse_url("sqlite:////tmp/q.db")
    assert (defaults.busy_timeout, defaults.synchronous) == (5000, "NORMAL")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "names no database file"),
        ("sqlite:///", "names no database file"),
        ("sqlite:////tmp/dir/", "names no database file"),
        ("sqlite://localhost/q.db", "have no host"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:///file:q.db?mode=memory&uri=true", "in-memory"),
        ("sqlite:////tmp/q.db?busy_timeout=soon", "busy_timeout must be"),
        ("sqlite:////tmp/q.db?busy_timeout=-1", "busy_timeout must be"),
        ("sqlite:////tmp/q.db?synchronous=sometimes", "synchronous must be one of"),
        ("sqlite:////tmp/q.db?journal_mode=delete", "unknown SQLite URL option"),
        ("sqlite:////tmp/q.db?busy_timeout=1&busy_timeout=2", "given twice"),
        ("sqlite:////tmp/q.db#frag", "unexpected"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        get_registry().backend(url)


def test_registry_and_keyword_options(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}?busy_timeout=100"
    backend = get_registry().backend(url, synchronous="extra", result_ttl=60)
    assert isinstance(backend, SQLiteBackend)
    assert backend.path == str(tmp_path / "q.db")
    assert (backend.busy_timeout, backend.synchronous, backend.result_ttl) == (100, "EXTRA", 60)
    assert SQLiteBackend.from_url(url, busy_timeout=7).busy_timeout == 7  # keywords win
    with pytest.raises(ConfigurationError, match="synchronous"):
        SQLiteBackend(str(tmp_path / "q.db"), synchronous="maybe")


def test_a_python_without_sqlite3_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sqlite3", None)  # as if built without it
    with pytest.raises(NotInstalled, match="built without"):
        get_registry().backend("sqlite:////tmp/never-created.db")


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    backend = SQLiteBackend(str(tmp_path / "no" / "such" / "dir" / "q.db"))
    with pytest.raises(BackendUnavailable, match="does not exist"):
        await backend.connect()


async def test_pragmas_applied(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with SQLiteBackend(str(path), synchronous="FULL", busy_timeout=1234) as backend:
        got = await backend.store.run(
            lambda conn: [conn.execute(f"PRAGMA {p}").fetchone()[0]
                          for p in ("journal_mode", "synchronous")]
        )
        assert backend.lock_wait == SQLiteBackend.min_lock_wait  # 4 x 1.234 s is less
    assert got == ["wal", 2]
    with sqlite3.connect(path) as plain:  # WAL is a property of the file
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ---------------------------------------------------------------------------- schema
def _versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM sitq_schema ORDER BY version")]


_LATEST = max(MIGRATIONS)
_NEXT = _LATEST + 1


class _V2Backend(SQLiteBackend):
    """This release's schema plus one more migration (a release to come)."""

    migrations: ClassVar[dict[int, Any]] = {
        **MIGRATIONS,
        _NEXT: ("ALTER TABLE sitq_jobs ADD COLUMN note TEXT",
            "CREATE INDEX sitq_jobs_note ON sitq_jobs (note)"),
    }


async def test_fresh_database_gets_the_latest_schema(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with sqlite3.connect(path) as conn:  # sitq may share a file with the app's tables
        conn.execute("CREATE TABLE app_users (id INTEGER PRIMARY KEY)")
    async with SQLiteBackend(str(path)):
        pass
    assert _versions(path) == sorted(MIGRATIONS)
    async with SQLiteBackend(str(path)):  # a second start applies nothing again
        pass
    assert _versions(path) == sorted(MIGRATIONS)


async def test_older_database_is_migrated_keeping_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    job = make_job("mig")
    async with SQLiteBackend(str(path)) as old:
        await old.enqueue(job)
    assert _versions(path) == sorted(MIGRATIONS)
    async with _V2Backend(str(path)) as new:
        [claimed] = await new.claim(["mig"], limit=5)
        assert claimed.id == job.id and claimed.payload == job.payload
        assert await new.complete(claimed, b"ok")
    assert _versions(path) == [*sorted(MIGRATIONS), _NEXT]
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sitq_jobs)")]
    assert "note" in columns


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with _V2Backend(str(path)):
        pass
    backend = SQLiteBackend(str(path))
    with pytest.raises(SchemaVersionError,
                       match=rf"schema version {_NEXT}.*only knows versions up to {_LATEST}"):
        await backend.connect()
    assert isinstance(SchemaVersionError("x"), BackendError)
    assert not backend.connected


def _start_and_enqueue(path: str, start: Any, out: Any) -> None:
    async def run() -> str:
        await asyncio.to_thread(start.wait, 30)
        async with SQLiteBackend(path, busy_timeout=200) as backend:
            return await backend.enqueue(make_job("together"))

    try:
        out.put(asyncio.run(run()))
    except BaseException as exc:
        out.put(f"error: {exc!r}")


@pytest.mark.timeout(90)
async def test_processes_starting_together_on_a_new_file(tmp_path: Path) -> None:
    path = str(tmp_path / "fresh.db")
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_start_and_enqueue, args=(path, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [await asyncio.to_thread(out.get, True, 60) for _ in procs]
    for p in procs:
        await asyncio.to_thread(p.join, 10)
    assert not [g for g in got if g.startswith("error")], got
    assert _versions(Path(path)) == sorted(MIGRATIONS)
    async with SQLiteBackend(path) as backend:
        assert (await backend.stats(["together"]))["together"].queued == 4


# ---------------------------------------------------------------------------- locks, TTL
def _hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


async def test_waits_out_a_long_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with SQLiteBackend(str(path), busy_timeout=100) as backend:
        locked = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(path, 1.0, locked))
        holder.start()
        locked.wait(5)
        started = time.monotonic()
        job = make_job("locked")
        assert await backend.enqueue(job) == job.id  # well past busy_timeout: retried
        assert time.monotonic() - started >= 0.8
        holder.join()


class _ImpatientBackend(SQLiteBackend):
    min_lock_wait = 0.5


async def test_a_lock_held_too_long_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with _ImpatientBackend(str(path), busy_timeout=50) as backend:
        locked = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(path, 1.5, locked))
        holder.start()
        locked.wait(5)
        with pytest.raises(BackendError, match="stayed locked"):
            await backend.enqueue(make_job("locked"))
        holder.join()


async def test_a_checkpoint_leaves_no_read_transaction_open(tmp_path: Path) -> None:
    """The WAL checkpoint the backend runs after many inline enqueues once left its
    statement open: the thread's next BEGIN IMMEDIATE then failed with
    SQLITE_BUSY_SNAPSHOT as long as another process kept committing."""
    path = tmp_path / "q.db"
    async with _ImpatientBackend(str(path), busy_timeout=0) as backend:
        await backend.enqueue_many([make_job("cp") for _ in range(20)])
        await backend.store._checkpoint()
        with sqlite3.connect(path, isolation_level=None) as other:  # another process commits
            other.execute("INSERT INTO sitq_ticks (queue, name, tick, claimed_at)"
                          " VALUES ('cp', 'other', 1, 1)")
        when = datetime(2030, 1, 1, tzinfo=UTC)
        assert await backend.claim_tick("mine", when, queue="cp")  # runs on the thread


async def test_expired_results_and_dead_letters_are_purged(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with SQLiteBackend(str(path)) as backend:
        await backend.enqueue_many([make_job("ttl", result_ttl=0.2) for _ in range(2)])
        ok, bad = await backend.claim(["ttl"], limit=2)
        await backend.complete(ok, b"ok")
        await backend.fail(bad, b"bad")
        assert [j.id for j in await backend.dead_letters("ttl")] == [bad.id]
        await asyncio.sleep(0.3)
        assert await backend.get_result(ok.id) is None
        assert await backend.dead_letters("ttl") == []
        assert await backend.get_job(bad.id) is None
        assert not await backend.requeue(bad.id)
        backend._next_purge = 0.0  # the next write purges (normally once a minute)
        await backend.enqueue(make_job("ttl"))
        [claimed] = await backend.claim(["ttl"])
        await backend.complete(claimed, b"fresh")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sitq_results").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM sitq_jobs").fetchone()[0] == 0


async def test_requeue_when_the_key_is_taken(tmp_path: Path) -> None:
    async with SQLiteBackend(str(tmp_path / "q.db")) as backend:
        first = make_job("keys", key="k")
        await backend.enqueue(first)
        [claimed] = await backend.claim(["keys"])
        await backend.fail(claimed, b"bad")
        second = make_job("keys", key="k")
        assert await backend.enqueue(second) == second.id  # the failed job freed the key
        assert await backend.requeue(first.id)  # runs again, without holding the key
        assert await backend.enqueue(make_job("keys", key="k")) == second.id
        assert {j.id for j in await backend.claim(["keys"], limit=5)} == {first.id, second.id}


def test_module_has_no_import_time_driver_dependency() -> None:
    import subprocess
    import sys

    code = ("import sys, sitq_sqlite.plugin, sitq_sqlite; "
            "assert 'sitq_sqlite.backend' not in sys.modules, 'plugin import loaded it'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


async def test_unopenable_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    backend = SQLiteBackend(str(tmp_path / "a-directory.db"))
    with pytest.raises(BackendUnavailable, match="cannot open"):
        await backend.connect()
