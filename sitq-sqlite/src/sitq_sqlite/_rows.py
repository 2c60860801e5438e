"""Rows of ``sitq_jobs`` to :class:`~sitq.job.Job` records, by column name.

The columns of ``sitq_jobs`` that hold a job carry the names of ``Job``'s fields, so the
SELECT lists below are generated from ``dataclasses.fields(Job)`` and a row becomes a
``Job`` through keyword arguments: a field added to ``Job`` without a column is an SQL
error at once, never a value in the wrong place.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson

from sitq.job import Job

__all__ = ["CLAIMED_JSON", "JOB_SELECT", "claimed_jobs", "job_from_row", "job_rows"]

#: Every field of ``Job``, each a column of ``sitq_jobs``.
JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
#: ``SELECT`` list of a whole job.
JOB_SELECT = ", ".join(JOB_FIELDS)

# A claim reads its jobs back as ONE JSON row (see _steps.py for why), each job an
# object keyed by field name. The claim itself sets these four fields, and the blobs
# travel as hex; ``pos`` is the job's place in the claim order.
_SET_BY_CLAIM = ("state", "lease_until", "worker", "started_at")
_AS_JSON = {
    "payload": "hex(j.payload)",
    "chain": "CASE WHEN j.chain IS NULL THEN NULL ELSE hex(j.chain) END",
    "headers": "json(coalesce(j.headers, '{}'))",
}
CLAIMED_JSON = (
    "SELECT json_group_array(json_object('pos', e.key, "
    + ", ".join(f"'{name}', {_AS_JSON.get(name, 'j.' + name)}"
                for name in JOB_FIELDS if name not in _SET_BY_CLAIM)
    + ")) FROM json_each(?) e JOIN sitq_jobs j ON j.rowid = e.value"
)

_by_pos = itemgetter("pos")


def _when(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def claimed_jobs(
    text: str | None, lease_until: datetime, started_at: datetime, worker: str
) -> list[Job]:
    """Jobs from a claim's JSON (decoded on the event loop, not the connection thread),
    in claim order."""
    if not text:
        return []
    rows: list[dict[str, Any]] = orjson.loads(text)
    rows.sort(key=_by_pos)
    jobs = []
    for row in rows:
        del row["pos"]
        chain = row["chain"]
        row["payload"] = bytes.fromhex(row["payload"])
        row["chain"] = None if chain is None else bytes.fromhex(chain)
        row["eta"] = _when(row["eta"])
        row["created_at"] = datetime.fromtimestamp(row["created_at"], UTC)
        row["cancel_requested"] = bool(row["cancel_requested"])
        jobs.append(Job(**row, state="running", lease_until=lease_until, worker=worker,
                        started_at=started_at))
    return jobs


def job_from_row(row: sqlite3.Row) -> Job:
    """A ``Job`` from a ``SELECT {JOB_SELECT}`` row read with ``sqlite3.Row``."""
    record = dict(zip(row.keys(), row, strict=True))
    headers = record["headers"]
    record["headers"] = orjson.loads(headers) if headers else {}
    for name in ("eta", "created_at", "lease_until", "started_at"):
        record[name] = _when(record[name])
    record["cancel_requested"] = bool(record["cancel_requested"])
    if record["state"] == "scheduled":  # waiting for its eta: queued, to a user
        record["state"] = "queued"
    return Job(**record)


def job_rows(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> list[Job]:
    """The jobs ``SELECT {JOB_SELECT} FROM sitq_jobs WHERE {where}`` finds."""
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return [job_from_row(row) for row in cursor.execute(
        f"SELECT {JOB_SELECT} FROM sitq_jobs WHERE {where}", params)]
