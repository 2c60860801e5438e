"""The versioned schema of sitq in PostgreSQL, and how it is brought up to date.

Everything lives in one schema of its own (default ``sitq``; ``?schema=NAME`` in the
URL). Migrations are numbered and applied in order, each once, inside one transaction
(DDL is transactional in PostgreSQL) that first takes a transaction-level advisory lock
on the schema's name: several processes starting together are serialized, and each
re-reads the version under the lock, so the first one migrates and the others find
nothing left to do. A database whose version is newer than this code knows is refused
rather than misread. Starting against an up-to-date schema is one read and no lock.

One table holds a job for its whole life. Each row is in the partial index of its
state only, so the claim index holds the queued jobs and nothing else: a million
finished jobs (kept until their result expires) cost a claim nothing (measured in
bench/RESULTS.md)::

    state      what the row is                          index
    queued     waiting; due at ``due`` (server time)    jobs_ready (queue, priority DESC, due, id)
    running    leased until ``lease_until``             jobs_leased (queue, lease_until)
    success    finished; ``result`` until expires_at    jobs_expiry (expires_at)
    failed     a dead letter; ``result`` until expires  jobs_failed (queue, expires_at)
    cancelled  removed while queued; its result         jobs_expiry (expires_at)

``jobs_key`` is the idempotency key: unique per (queue, key) among queued and running
jobs only, so a finished job frees its key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sitq.errors import BackendError, ConfigurationError

__all__ = [
    "LATEST",
    "MIGRATIONS",
    "SchemaVersionError",
    "check_schema_name",
    "migrate",
    "migration_sql",
    "schema_version",
]


class SchemaVersionError(BackendError):
    """The schema is older than this sitq-postgres needs (and migrating on connect is
    off), or newer than it knows."""


_NAME = re.compile(r"[a-z_][a-z0-9_]{0,50}")


def check_schema_name(name: str) -> str:
    """``name`` if it is a plain lower-case SQL identifier; a clear error otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"schema must be a lower-case SQL identifier (letters, digits, _; at most 51 "
            f"characters, not starting with a digit), got {name!r}; e.g. ?schema=sitq"
        )
    return name


#: Each migration: statements with ``{s}`` standing for the schema name.
MIGRATIONS: Mapping[int, Sequence[str]] = {
    1: (
        """
        CREATE TABLE {s}.jobs (
            id text PRIMARY KEY,
            queue text NOT NULL,
            state text NOT NULL CHECK (state IN
                ('queued', 'running', 'success', 'failed', 'cancelled')),
            priority integer NOT NULL DEFAULT 0,
            due timestamptz NOT NULL,            -- claim order: eta, or the server's now()
            eta timestamptz,
            attempt integer NOT NULL DEFAULT 0,  -- the fencing token
            failures integer NOT NULL DEFAULT 0,
            lease_expiries integer NOT NULL DEFAULT 0,
            max_retries integer NOT NULL DEFAULT 0,
            timeout double precision,
            result_ttl double precision,
            created_at timestamptz NOT NULL,
            lease_until timestamptz,
            started_at timestamptz,
            worker text,
            cancel_requested boolean NOT NULL DEFAULT false,
            expires_at timestamptz,              -- finished jobs: when the result expires
            key text,
            serializer text NOT NULL,
            task text NOT NULL,
            headers jsonb,
            payload bytea NOT NULL,
            chain bytea,
            result bytea
        ) WITH (autovacuum_vacuum_scale_factor = 0.02,
                autovacuum_vacuum_insert_scale_factor = 0.05)
        """,
        "CREATE INDEX jobs_ready ON {s}.jobs (queue, priority DESC, due, id)"
        " WHERE state = 'queued'",
        "CREATE INDEX jobs_leased ON {s}.jobs (queue, lease_until) WHERE state = 'running'",
        "CREATE INDEX jobs_failed ON {s}.jobs (queue, expires_at) WHERE state = 'failed'",
        "CREATE INDEX jobs_expiry ON {s}.jobs (expires_at) WHERE expires_at IS NOT NULL",
        "CREATE UNIQUE INDEX jobs_key ON {s}.jobs (queue, key)"
        " WHERE key IS NOT NULL AND state IN ('queued', 'running')",
        """
        CREATE TABLE {s}.ticks (
            queue text NOT NULL,
            name text NOT NULL,
            tick timestamptz NOT NULL,
            claimed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (queue, name, tick)
        )
        """,
    ),
}
LATEST = max(MIGRATIONS)


def migration_sql(schema: str, since: int = 0) -> list[str]:
    """The statements that bring ``schema`` from version ``since`` to the latest, as a
    DBA would run them (``python -m sitq_postgres migrate --sql``)."""
    s = check_schema_name(schema)
    out = [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"CREATE TABLE IF NOT EXISTS {s}.migrations ("
        " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    ]
    for number in sorted(v for v in MIGRATIONS if v > since):
        out += [_dedent(stmt).format(s=s) for stmt in MIGRATIONS[number]]
        out.append(f"INSERT INTO {s}.migrations (version) VALUES ({number})")
    return out


def _dedent(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    return "\n".join(line[indent:] for line in lines)


async def schema_version(conn: Any, schema: str) -> int:
    """The version stored in ``schema`` (0 when sitq never migrated it)."""
    table = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.migrations")
    if table is None:
        return 0
    return int(await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {schema}.migrations"))


def _check_not_newer(version: int, schema: str, where: str) -> None:
    if version > LATEST:
        raise SchemaVersionError(
            f"schema {schema!r} at {where} has sitq schema version {version}, but this "
            f"sitq-postgres only knows versions up to {LATEST}: it was migrated by a newer "
            "release. Upgrade (pip install -U sitq-postgres) or use another schema (?schema=)"
        )


async def migrate(
    conn: Any, schema: str, where: str, *, apply: bool = True,
    log: Callable[[str], None] | None = None,
) -> int:
    """Bring ``schema`` up to date on ``conn`` (an asyncpg connection); returns the
    version now in the database. With ``apply=False`` an out-of-date schema is an error
    that says how to migrate."""
    version = await schema_version(conn, schema)
    _check_not_newer(version, schema, where)
    if version == LATEST:
        return version
    if not apply:
        raise SchemaVersionError(
            f"schema {schema!r} at {where} is at sitq schema version {version}, this "
            f"sitq-postgres needs {LATEST}, and migrating on connect is off (migrate=false). "
            "Run: python -m sitq_postgres migrate URL  (or print the SQL with --sql)"
        )
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"sitq-migrate:{schema}")
        version = await schema_version(conn, schema)  # another process may have migrated
        _check_not_newer(version, schema, where)
        for statement in migration_sql(schema, version):
            await conn.execute(statement)
    if log is not None and version < LATEST:
        log(f"migrated schema {schema!r} from version {version} to {LATEST}")
    return LATEST
