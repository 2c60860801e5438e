"""The SQL of each storage step, as functions run on a connection.

Write steps are ``step(conn, now, *args)`` and run inside a ``BEGIN IMMEDIATE``
transaction that the caller opened (``now`` is read after the write lock was taken);
reads are ``step(conn, *args)`` in autocommit mode.

A worker's claim and finish send many jobs through ONE statement each: rows travel as
a JSON array (``json_each``) and blobs as one concatenated blob cut with ``substr``
(which returns a BLOB for a BLOB). A statement that steps once needs the GIL only a few
times; one that steps per row needs it per row, and while the event loop runs jobs the
connection thread waits up to the interpreter's switch interval (5 ms) for each, so
per-row statements serialise the two threads. (A bulk enqueue keeps ``executemany``:
its producer waits for it, so nothing competes for the GIL, and it measured faster.)
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson

from sitq.backend import CancelOutcome, Finish, LeaseState, QueueStats
from sitq.job import Job

from ._rows import CLAIMED_JSON, job_rows

#: Claimed cron ticks are kept this long (seconds), far beyond any misfire grace.
TICK_RETENTION = 7 * 24 * 3600.0

_INSERT = (
    "INSERT INTO sitq_jobs (id, queue, state, priority, due, eta, max_retries, timeout,"
    " result_ttl, created_at, key, live_key, serializer, task, headers, payload, chain)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_FENCE = "WHERE id = ? AND state = 'running' AND attempt = ?"
_LEASE_ROWIDS = (
    "UPDATE sitq_jobs SET state = 'running', attempt = attempt + 1,"
    " lease_expiries = lease_expiries + (state = 'running'),"
    " lease_until = ?, started_at = ?, worker = ?"
    " WHERE rowid IN (SELECT value FROM json_each(?))"
)
_PUT_RESULTS = (
    "INSERT OR REPLACE INTO sitq_results (id, queue, expires_at, data)"
    " SELECT value->>0, value->>1, ?1 + value->>2, substr(?2, value->>3, value->>4)"
    " FROM json_each(?3)"
)
_PUT_RESULT = "INSERT OR REPLACE INTO sitq_results (id, queue, expires_at, data) VALUES (?,?,?,?)"
_LIVE_JOB = "id = ? AND (state != 'failed' OR expires_at > ?)"


# ---------------------------------------------------------------------- enqueue
def enqueue(conn: sqlite3.Connection, now: float, jobs: list[Job]) -> list[str]:
    rows = []
    keyed = False
    for job in jobs:
        eta = None if job.eta is None else job.eta.timestamp()
        due = now if eta is None else eta
        keyed = keyed or job.key is not None
        rows.append((
            job.id, job.queue, "scheduled" if due > now else "queued", job.priority,
            due, eta, job.max_retries, job.timeout, job.result_ttl,
            job.created_at.timestamp(), job.key, job.key, job.serializer, job.task,
            orjson.dumps(job.headers).decode() if job.headers else None, job.payload,
            job.chain,
        ))
    if not keyed:
        conn.executemany(_INSERT, rows)
        return [job.id for job in jobs]
    ids = []
    for job, row in zip(jobs, rows, strict=True):
        if job.key is not None:
            held = conn.execute(
                "SELECT id FROM sitq_jobs WHERE queue = ? AND live_key = ?",
                (job.queue, job.key),
            ).fetchone()
            if held is not None:
                ids.append(held[0])
                continue
        conn.execute(_INSERT, row)
        ids.append(job.id)
    return ids


# ---------------------------------------------------------------------- claim
def claimable(conn: sqlite3.Connection, now: float, queues: list[str]) -> bool:
    """Whether a claim on ``queues`` would find a job (a read: takes no lock)."""
    for queue in queues:
        if conn.execute(
            "SELECT EXISTS (SELECT 1 FROM sitq_jobs WHERE state = 'queued' AND queue = ?)"
            " OR EXISTS (SELECT 1 FROM sitq_jobs WHERE state = 'scheduled' AND queue = ?"
            " AND due <= ?) OR EXISTS (SELECT 1 FROM sitq_jobs WHERE state = 'running'"
            " AND queue = ? AND lease_until <= ?)",
            (queue, queue, now, queue, now),
        ).fetchone()[0]:
            return True
    return False


def next_due(conn: sqlite3.Connection, queues: list[str]) -> float | None:
    """The earliest time a scheduled job becomes due or a lease expires in ``queues``."""
    found: float | None = None
    for queue in queues:
        for (when,) in conn.execute(
            "SELECT min(due) FROM sitq_jobs WHERE state = 'scheduled' AND queue = ?"
            " UNION ALL SELECT min(lease_until) FROM sitq_jobs"
            " WHERE state = 'running' AND queue = ?", (queue, queue),
        ):
            if when is not None and (found is None or when < found):
                found = when
    return found


def claim(
    conn: sqlite3.Connection, now: float, queues: list[str], limit: int, lease: float,
    worker: str,
) -> tuple[float, str | None]:
    """Lease the jobs; returns the store's ``now`` and the claimed rows as JSON text
    (see :data:`~._rows.CLAIMED_JSON`)."""
    expired: list[int] = []
    for queue in queues:
        conn.execute(
            "UPDATE sitq_jobs SET state = 'queued' WHERE state = 'scheduled'"
            " AND queue = ? AND due <= ?", (queue, now),
        )
        expired += orjson.loads(conn.execute(
            "SELECT json_group_array(rowid) FROM (SELECT rowid FROM sitq_jobs"
            " WHERE state = 'running' AND queue = ? AND lease_until <= ?"
            " ORDER BY lease_until LIMIT ?)", (queue, now, limit),
        ).fetchone()[0])
    if not expired and len(queues) == 1:
        # The common case: the best queued jobs, picked in one statement.
        rowids: str = conn.execute(
            "SELECT json_group_array(rowid) FROM (SELECT rowid FROM sitq_jobs"
            " WHERE state = 'queued' AND queue = ? ORDER BY priority DESC, due, rowid"
            " LIMIT ?)", (queues[0], limit),
        ).fetchone()[0]
    else:
        picked = [(0, 0, 0.0, rowid) for rowid in expired[:limit]]
        if len(picked) < limit:
            for queue in queues:
                picked += [
                    (1, -priority, due, rowid) for rowid, priority, due in conn.execute(
                        "SELECT rowid, priority, due FROM sitq_jobs WHERE state = 'queued'"
                        " AND queue = ? ORDER BY priority DESC, due, rowid LIMIT ?",
                        (queue, limit - len(expired)),
                    )
                ]
        picked.sort()
        rowids = orjson.dumps([rowid for *_, rowid in picked[:limit]]).decode()
    if rowids == "[]":
        return now, None
    conn.execute(_LEASE_ROWIDS, (now + lease, now, worker, rowids))
    text: str = conn.execute(CLAIMED_JSON, (rowids,)).fetchone()[0]
    return now, text


# ---------------------------------------------------------------------- leases, finish
def extend(conn: sqlite3.Connection, now: float, jobs: list[Job], lease: float) -> list[LeaseState]:
    states: list[LeaseState] = []
    for job in jobs:
        row = conn.execute(
            f"UPDATE sitq_jobs SET lease_until = ? {_FENCE} RETURNING cancel_requested",
            (now + lease, job.id, job.attempt),
        ).fetchone()
        states.append("lost" if row is None else "cancel" if row[0] else "ok")
    return states


def finish(
    conn: sqlite3.Connection, now: float, items: list[Finish], ids: str,
    success_rows: list[list[Any]], blob: bytes, purge: bool,
) -> list[bool]:
    """Record a batch. ``ids``: the jobs' ids as JSON; ``success_rows``: ``[id, queue,
    ttl, offset, size]`` of each success's result inside ``blob``."""
    # Fence the whole batch with one read: a job is finishable by the attempt that
    # holds its lease. Successes (the common case) then go in two set statements.
    live = orjson.loads(conn.execute(
        "SELECT json_group_object(id, attempt) FROM sitq_jobs"
        " WHERE id IN (SELECT value FROM json_each(?)) AND state = 'running'",
        (ids,),
    ).fetchone()[0])
    out = []
    done: list[list[Any]] = []
    results = []
    rows = iter(success_rows)
    for item in items:
        job = item.job
        ok = live.pop(job.id, None) == job.attempt  # pop: a second finish is refused
        out.append(ok)
        row = next(rows) if item.outcome == "success" and item.result is not None else None
        if not ok:
            continue
        if row is not None:
            done.append(row)
        elif item.outcome == "failed":
            conn.execute(
                "UPDATE sitq_jobs SET state = 'failed', failures = ?, lease_until = NULL,"
                " live_key = NULL, expires_at = ? WHERE id = ?",
                (job.failures, now + item.ttl, job.id),
            )
            if item.result is not None:
                results.append((job.id, job.queue, now + item.ttl, item.result))
        elif item.outcome == "retry":
            due = now + max(item.retry_delay, 0.0)
            conn.execute(
                "UPDATE sitq_jobs SET state = ?, due = ?, eta = ?, failures = ?,"
                " lease_until = NULL, worker = NULL WHERE id = ?",
                ("scheduled" if due > now else "queued", due, due, job.failures, job.id),
            )
        else:  # release: due now, at its old place in the queue
            conn.execute(
                "UPDATE sitq_jobs SET state = 'queued', eta = NULL, failures = ?,"
                " due = min(due, ?), lease_until = NULL, worker = NULL WHERE id = ?",
                (job.failures, now, job.id),
            )
    if done:
        text = orjson.dumps(done).decode()
        conn.execute(
            "DELETE FROM sitq_jobs WHERE id IN (SELECT value->>0 FROM json_each(?))", (text,)
        )
        conn.execute(_PUT_RESULTS, (now, blob, text))
    if results:
        conn.executemany(_PUT_RESULT, results)
    if purge:
        purge_expired(conn, now)
    return out


def purge_expired(conn: sqlite3.Connection, now: float) -> None:
    """Delete expired results, dead letters and old ticks."""
    conn.execute("DELETE FROM sitq_results WHERE expires_at <= ?", (now,))
    conn.execute("DELETE FROM sitq_jobs WHERE state = 'failed' AND expires_at <= ?", (now,))
    conn.execute("DELETE FROM sitq_ticks WHERE tick < ?", (now - TICK_RETENTION,))


# ---------------------------------------------------------------------- results, jobs
def get_result(conn: sqlite3.Connection, job_id: str) -> bytes | None:
    row = conn.execute(
        "SELECT data FROM sitq_results WHERE id = ? AND expires_at > ?", (job_id, time.time())
    ).fetchone()
    return None if row is None else row[0]


def get_job(conn: sqlite3.Connection, job_id: str) -> Job | None:
    found = job_rows(conn, _LIVE_JOB, (job_id, time.time()))
    return found[0] if found else None


def cancel(
    conn: sqlite3.Connection, now: float, job_id: str, result: bytes, ttl: float
) -> CancelOutcome:
    row = conn.execute(
        f"SELECT state, queue FROM sitq_jobs WHERE {_LIVE_JOB}", (job_id, now)
    ).fetchone()
    if row is None or row[0] == "failed":
        found = conn.execute(
            "SELECT 1 FROM sitq_results WHERE id = ? AND expires_at > ?", (job_id, now)
        ).fetchone()
        return "finished" if found else "not_found"
    state, queue = row
    if state == "running":
        conn.execute("UPDATE sitq_jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return "requested"
    conn.execute("DELETE FROM sitq_jobs WHERE id = ?", (job_id,))
    conn.execute(_PUT_RESULT, (job_id, queue, now + ttl, result))
    return "cancelled"


# ---------------------------------------------------------------------- management
def stats(conn: sqlite3.Connection, queues: list[str] | None) -> dict[str, QueueStats]:
    now = time.time()
    out: dict[str, QueueStats] = {}
    # One indexed count per state (each state has its own partial index).
    for state, extra in (("queued", ""), ("running", ""), ("failed", " AND expires_at > ?"),
                         ("scheduled", "")):
        params: tuple[Any, ...] = (now, now) if extra else (now,)
        select = (
            "SELECT queue, count(*), sum(due <= ?) FROM sitq_jobs"
            f" WHERE state = '{state}'{extra}"
        )
        if queues is not None:
            select += f" AND queue IN ({','.join('?' * len(queues))})"
            params += tuple(queues)
        for queue, count, due in conn.execute(select + " GROUP BY queue", params):
            st = out.setdefault(queue, QueueStats())
            if state == "queued":
                st.queued += count
            elif state == "running":
                st.running += count
            elif state == "failed":
                st.failed += count
            else:
                st.queued += due or 0
                st.scheduled += count - (due or 0)
    return out


def purge(conn: sqlite3.Connection, now: float, queues: list[str] | None) -> int:
    if queues is None:
        count = conn.execute("DELETE FROM sitq_jobs").rowcount
        conn.execute("DELETE FROM sitq_results")
        conn.execute("DELETE FROM sitq_ticks")
        return count
    marks = ",".join("?" * len(queues))
    count = 0
    for state in ("queued", "scheduled", "running", "failed"):
        count += conn.execute(
            f"DELETE FROM sitq_jobs WHERE state = '{state}' AND queue IN ({marks})", queues
        ).rowcount
    conn.execute(f"DELETE FROM sitq_results WHERE queue IN ({marks})", queues)
    conn.execute(f"DELETE FROM sitq_ticks WHERE queue IN ({marks})", queues)
    return count


def claim_tick(conn: sqlite3.Connection, now: float, name: str, tick: float, queue: str) -> bool:
    return conn.execute(
        "INSERT OR IGNORE INTO sitq_ticks (queue, name, tick, claimed_at) VALUES (?, ?, ?, ?)",
        (queue, name, tick, now),
    ).rowcount == 1


def dead_letters(conn: sqlite3.Connection, queue: str, limit: int) -> list[Job]:
    return job_rows(
        conn, "state = 'failed' AND queue = ? AND expires_at > ? ORDER BY rowid LIMIT ?",
        (queue, time.time(), limit),
    )


def requeue(conn: sqlite3.Connection, now: float, job_id: str) -> bool:
    row = conn.execute(
        "SELECT key, queue FROM sitq_jobs WHERE id = ? AND state = 'failed' AND expires_at > ?",
        (job_id, now),
    ).fetchone()
    if row is None:
        return False
    key, queue = row
    if key is not None and conn.execute(
        "SELECT 1 FROM sitq_jobs WHERE queue = ? AND live_key = ?", (queue, key)
    ).fetchone():
        key = None  # another live job holds the key now; this one runs without it
    conn.execute("DELETE FROM sitq_results WHERE id = ?", (job_id,))
    conn.execute(
        "UPDATE sitq_jobs SET state = 'queued', failures = 0, lease_expiries = 0,"
        " eta = NULL, due = ?, cancel_requested = 0, expires_at = NULL, live_key = ?,"
        " lease_until = NULL, worker = NULL WHERE id = ?",
        (now, key, job_id),
    )
    return True
