"""The versioned schema of a sitq SQLite database, and how it is brought up to date.

Migrations are keyed by a version number and applied in order, each once, inside one
``BEGIN IMMEDIATE`` transaction (DDL is transactional in SQLite). Applied versions are
rows of ``sitq_schema``. Several processes starting together are safe: the write lock
serializes them and each re-reads the version under the lock, so the first one migrates
and the others find nothing left to do. A database whose version is newer than this
code knows is refused rather than misread.

``sitq_results`` is a ``WITHOUT ROWID`` table: one B-tree keyed by the job id instead of
a rowid table plus an index on the id (results are small; large ones overflow as usual).
Column order matters for speed: small columns first, the blobs (``payload``, ``chain``)
last, so reading a job's state never walks a large payload's overflow pages.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence

from sitq.errors import BackendError

__all__ = ["MIGRATIONS", "SchemaVersionError", "migrate", "schema_version"]


class SchemaVersionError(BackendError):
    """The database was written by a newer sitq-sqlite than this one."""


MIGRATIONS: Mapping[int, Sequence[str]] = {
    1: (
        # One row per job that is queued, scheduled, running or failed (a dead letter).
        # A successful job's row is deleted; its result lives in sitq_results.
        """
        CREATE TABLE sitq_jobs (
            id TEXT PRIMARY KEY NOT NULL,
            queue TEXT NOT NULL,
            state TEXT NOT NULL,          -- queued | scheduled | running | failed
            priority INTEGER NOT NULL DEFAULT 0,
            due REAL NOT NULL,            -- claim order: eta, or the store's time of enqueue
            eta REAL,
            attempt INTEGER NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            lease_expiries INTEGER NOT NULL DEFAULT 0,
            max_retries INTEGER NOT NULL DEFAULT 0,
            timeout REAL,
            result_ttl REAL,
            created_at REAL NOT NULL,
            lease_until REAL,
            started_at REAL,
            worker TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            expires_at REAL,              -- failed jobs: when the dead letter expires
            key TEXT,
            live_key TEXT,                -- = key while the job holds it (queued/running)
            serializer TEXT NOT NULL,
            task TEXT NOT NULL,
            headers TEXT,                 -- JSON object, NULL when empty
            payload BLOB NOT NULL,
            chain BLOB
        )
        """,
        # Partial indexes: a row is in exactly the index of its state.
        "CREATE INDEX sitq_jobs_ready ON sitq_jobs (queue, priority DESC, due)"
        " WHERE state = 'queued'",
        "CREATE INDEX sitq_jobs_scheduled ON sitq_jobs (queue, due) WHERE state = 'scheduled'",
        "CREATE INDEX sitq_jobs_leased ON sitq_jobs (queue, lease_until)"
        " WHERE state = 'running'",
        "CREATE INDEX sitq_jobs_failed ON sitq_jobs (queue) WHERE state = 'failed'",
        "CREATE INDEX sitq_jobs_expiry ON sitq_jobs (expires_at) WHERE state = 'failed'",
        "CREATE UNIQUE INDEX sitq_jobs_key ON sitq_jobs (live_key) WHERE live_key IS NOT NULL",
        """
        CREATE TABLE sitq_results (
            id TEXT PRIMARY KEY NOT NULL,
            queue TEXT NOT NULL,
            expires_at REAL NOT NULL,
            data BLOB NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX sitq_results_expiry ON sitq_results (expires_at)",
        """
        CREATE TABLE sitq_ticks (
            name TEXT NOT NULL,
            tick REAL NOT NULL,
            claimed_at REAL NOT NULL,
            PRIMARY KEY (name, tick)
        ) WITHOUT ROWID
        """,
    ),
    # The contract scopes idempotency keys and cron ticks to a queue (docs/decisions.md):
    # a key is unique per (queue, key); a tick per (queue, schedule name, tick), so that
    # purging a queue forgets its ticks. Ticks claimed before (and by an older process
    # still running) go to the queue 'default', where most schedules enqueue.
    2: (
        "DROP INDEX sitq_jobs_key",
        "CREATE UNIQUE INDEX sitq_jobs_key ON sitq_jobs (queue, live_key)"
        " WHERE live_key IS NOT NULL",
        "ALTER TABLE sitq_ticks RENAME TO sitq_ticks_v1",
        """
        CREATE TABLE sitq_ticks (
            queue TEXT NOT NULL DEFAULT 'default',
            name TEXT NOT NULL,
            tick REAL NOT NULL,
            claimed_at REAL NOT NULL,
            PRIMARY KEY (queue, name, tick)
        ) WITHOUT ROWID
        """,
        "INSERT INTO sitq_ticks (name, tick, claimed_at)"
        " SELECT name, tick, claimed_at FROM sitq_ticks_v1",
        "DROP TABLE sitq_ticks_v1",
    ),
}


def _read_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sitq_schema'"
    ).fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT max(version) FROM sitq_schema").fetchone()
    return int(row[0] or 0)


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version stored in the database (0 for a database sitq never touched)."""
    return _read_version(conn)


def _check_not_newer(version: int, latest: int, path: str) -> None:
    if version > latest:
        raise SchemaVersionError(
            f"the SQLite database {path} has sitq schema version {version}, but this "
            f"sitq-sqlite only knows versions up to {latest}: it was written by a newer "
            "release. Upgrade (pip install -U sitq-sqlite) or use another database file"
        )


def migrate(
    conn: sqlite3.Connection, path: str, migrations: Mapping[int, Sequence[str]] = MIGRATIONS
) -> int:
    """Bring the schema up to date; returns the version now in the database.

    Runs on the connection's own thread (autocommit mode). A database already at the
    latest version is only read, so a starting worker takes no write lock for it.
    """
    latest = max(migrations)
    version = _read_version(conn)
    _check_not_newer(version, latest, path)
    if version == latest:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sitq_schema ("
            " version INTEGER PRIMARY KEY NOT NULL, applied_at REAL NOT NULL)"
        )
        version = _read_version(conn)  # another process may have migrated meanwhile
        _check_not_newer(version, latest, path)
        for number in sorted(v for v in migrations if v > version):
            for statement in migrations[number]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO sitq_schema (version, applied_at) VALUES (?, ?)",
                (number, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return latest
