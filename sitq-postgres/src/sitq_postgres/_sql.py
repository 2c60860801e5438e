"""The SQL of every storage step, for one schema (see ``_schema`` for the table).

Each step is one statement (cancel is the one exception: a short transaction). Due-ness,
leases and expiries use the server's ``now()``; notifications are sent by the same
statement that makes the change, so they go out exactly when it commits (and never for
a transaction that rolls back).

Channels: ``<schema>_jobs`` carries a queue name when jobs may be due in it;
``<schema>_done`` carries comma-joined ids of jobs that finished (at most 200 a message,
well under PostgreSQL's 8,000-byte payload limit).
"""

from __future__ import annotations

from functools import cache

__all__ = ["JOB_COLUMNS", "Statements"]

#: Columns read into a Job (by name).
JOB_COLUMNS = (
    "id, queue, state, priority, eta, attempt, failures, lease_expiries, max_retries,"
    " timeout, result_ttl, created_at, lease_until, started_at, worker, cancel_requested,"
    " key, serializer, task, headers, payload, chain"
)
_J = ", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(","))
_INSERT_COLUMNS = (
    "id, queue, state, priority, due, eta, max_retries, timeout, result_ttl, created_at,"
    " key, serializer, task, headers, payload, chain"
)
#: Ids per done notification.
DONE_GROUP = 200


class Statements:
    """The statements of one schema, formatted once."""

    def __init__(self, schema: str) -> None:
        s = self.schema = schema
        self.jobs_channel = f"{s}_jobs"
        self.done_channel = f"{s}_done"
        jobs, done = self.jobs_channel, self.done_channel

        self.enqueue_one = f"""
            WITH ins AS (
                INSERT INTO {s}.jobs ({_INSERT_COLUMNS})
                VALUES ($1, $2, 'queued', $3, coalesce($4, now()), $4, $5, $6, $7, $8, $9,
                        $10, $11, $12, $13, $14)
                ON CONFLICT DO NOTHING
                RETURNING id, queue, due
            ), note AS (
                SELECT pg_notify('{jobs}', queue) FROM ins WHERE due <= now()
            )
            SELECT (SELECT id FROM ins) AS id, (SELECT count(*) FROM note) AS notes"""

        self.enqueue_many = f"""
            WITH ins AS (
                INSERT INTO {s}.jobs ({_INSERT_COLUMNS})
                SELECT id, queue, 'queued', priority, coalesce(eta, now()), eta, max_retries,
                       timeout, result_ttl, created_at, key, serializer, task, headers,
                       payload, chain
                FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::int[],
                            $6::float8[], $7::float8[], $8::timestamptz[], $9::text[],
                            $10::text[], $11::text[], $12::jsonb[], $13::bytea[], $14::bytea[])
                    AS v(id, queue, priority, eta, max_retries, timeout, result_ttl,
                         created_at, key, serializer, task, headers, payload, chain)
                ON CONFLICT DO NOTHING
                RETURNING queue, due
            ), note AS (
                SELECT pg_notify('{jobs}', queue)
                FROM (SELECT DISTINCT queue FROM ins WHERE due <= now()) q
            )
            SELECT (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM note) AS notes"""

        # Ids of the given jobs that exist, and the live holder of each (queue, key).
        self.existing = f"SELECT id FROM {s}.jobs WHERE id = ANY($1::text[])"
        self.key_holder = (
            f"SELECT id FROM {s}.jobs WHERE queue = $1 AND key = $2"
            " AND state IN ('queued', 'running')"
        )

        self.extend = f"""
            UPDATE {s}.jobs j SET lease_until = now() + $3::float8 * interval '1 second'
            FROM unnest($1::text[], $2::int[]) AS v(id, attempt)
            WHERE j.id = v.id AND j.attempt = v.attempt AND j.state = 'running'
            RETURNING j.id, j.attempt, j.cancel_requested"""

        self.finish = f"""
            WITH v AS (
                SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::bytea[],
                                     $5::float8[], $6::float8[], $7::int[])
                    AS v(id, attempt, outcome, result, ttl, delay, failures)
            ), upd AS (
                UPDATE {s}.jobs j SET
                    state = CASE WHEN v.outcome IN ('retry', 'release') THEN 'queued'
                                 ELSE v.outcome END,
                    result = v.result,
                    expires_at = CASE WHEN v.outcome IN ('success', 'failed')
                                      THEN now() + v.ttl * interval '1 second' END,
                    failures = v.failures,
                    due = CASE WHEN v.outcome = 'retry'
                               THEN now() + v.delay * interval '1 second' ELSE j.due END,
                    eta = CASE WHEN v.outcome = 'retry'
                               THEN now() + v.delay * interval '1 second' ELSE j.eta END,
                    lease_until = NULL,
                    worker = CASE WHEN v.outcome IN ('retry', 'release') THEN NULL
                                  ELSE j.worker END
                FROM v
                WHERE j.id = v.id AND j.attempt = v.attempt AND j.state = 'running'
                RETURNING j.id, j.queue, v.outcome, j.due
            ), done AS (
                SELECT pg_notify('{done}', string_agg(id, ','))
                FROM (SELECT id, (row_number() OVER ()) / {DONE_GROUP} AS grp
                      FROM upd WHERE outcome IN ('success', 'failed')) d
                GROUP BY grp
            ), again AS (
                SELECT pg_notify('{jobs}', queue)
                FROM (SELECT DISTINCT queue FROM upd WHERE due <= now()
                      AND outcome IN ('retry', 'release')) q
            )
            SELECT (SELECT array_agg(id) FROM upd) AS ids,
                   (SELECT count(*) FROM done) AS done, (SELECT count(*) FROM again) AS again"""
        # After a lost connection, a finish may be sent twice: an attempt already in the
        # state it was finished to was recorded by the first send.
        self.finished_already = f"""
            SELECT j.id FROM {s}.jobs j
            JOIN unnest($1::text[], $2::int[], $3::text[]) AS v(id, attempt, state)
              ON j.id = v.id
            WHERE j.attempt = v.attempt AND j.state = v.state"""

        self.get_result = (
            f"SELECT result FROM {s}.jobs WHERE id = $1 AND expires_at > now()"
        )
        self.get_job = f"""
            SELECT {JOB_COLUMNS} FROM {s}.jobs WHERE id = $1
            AND (state IN ('queued', 'running') OR (state = 'failed' AND expires_at > now()))"""

        self.cancel_lock = (
            f"SELECT state, expires_at > now() AS alive FROM {s}.jobs WHERE id = $1 FOR UPDATE"
        )
        self.cancel_queued = f"""
            WITH c AS (
                UPDATE {s}.jobs SET state = 'cancelled', result = $2,
                    expires_at = now() + $3::float8 * interval '1 second'
                WHERE id = $1 RETURNING id
            )
            SELECT pg_notify('{done}', id) FROM c"""
        self.cancel_running = (
            f"UPDATE {s}.jobs SET cancel_requested = true WHERE id = $1"
        )

        self.claim_tick = (
            f"INSERT INTO {s}.ticks (queue, name, tick) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING true"
        )
        self.dead_letters = f"""
            SELECT {JOB_COLUMNS} FROM {s}.jobs
            WHERE state = 'failed' AND queue = $1 AND expires_at > now()
            ORDER BY expires_at, id LIMIT $2"""
        self.requeue = f"""
            WITH r AS (
                UPDATE {s}.jobs j SET state = 'queued', result = NULL, expires_at = NULL,
                    failures = 0, lease_expiries = 0, eta = NULL, due = now(),
                    cancel_requested = false, lease_until = NULL, worker = NULL,
                    key = CASE WHEN EXISTS (
                        SELECT 1 FROM {s}.jobs h WHERE h.queue = j.queue AND h.key = j.key
                        AND h.state IN ('queued', 'running')) THEN NULL ELSE j.key END
                WHERE j.id = $1 AND j.state = 'failed' AND j.expires_at > now()
                RETURNING j.queue
            ), note AS (SELECT pg_notify('{jobs}', queue) FROM r)
            SELECT (SELECT count(*) FROM r) AS requeued, (SELECT count(*) FROM note) AS notes"""

        self.prune_jobs = f"""
            WITH d AS (
                DELETE FROM {s}.jobs WHERE id IN (
                    SELECT id FROM {s}.jobs WHERE expires_at <= now()
                    LIMIT $1 FOR UPDATE SKIP LOCKED)
                RETURNING 1
            ) SELECT count(*) FROM d"""
        self.prune_ticks = (
            f"DELETE FROM {s}.ticks WHERE claimed_at < now() - $1::float8 * interval '1 second'"
        )

    # ------------------------------------------------------------------ by queue count
    @cache  # noqa: B019 - one Statements per schema, kept as long as its backends
    def claim(self, queue_count: int) -> str:
        """Lease up to $1 due jobs for $2 seconds to worker $3, from the queues $4...

        Expired leases first (taken over), then queued jobs by priority, due time and
        id. Each queue is read through its own ordered index scan (``queue = ANY(...)``
        would sort every queued job of the queues on each claim)."""
        s = self.schema
        names = [f"${4 + i}" for i in range(queue_count)]
        # A locking clause is not allowed in a leaf of a UNION: each one is a subquery.
        branches = [
            f"SELECT * FROM (SELECT id, priority, due FROM {s}.jobs"
            f" WHERE state = 'queued' AND queue = {q} AND due <= now()"
            f" ORDER BY priority DESC, due, id LIMIT $1 FOR UPDATE SKIP LOCKED) q{i}"
            for i, q in enumerate(names)
        ]
        queued = branches[0] if queue_count == 1 else (
            f"SELECT * FROM ({' UNION ALL '.join(branches)}) q"
            " ORDER BY priority DESC, due, id LIMIT $1"
        )
        return f"""
            WITH picked AS (
                SELECT id, true AS late FROM (
                    SELECT id FROM {s}.jobs
                    WHERE state = 'running' AND queue IN ({', '.join(names)})
                      AND lease_until <= now()
                    LIMIT $1 FOR UPDATE SKIP LOCKED) expired
                UNION ALL
                SELECT id, false FROM ({queued}) due
                LIMIT $1
            )
            UPDATE {s}.jobs j SET state = 'running', attempt = j.attempt + 1,
                lease_expiries = j.lease_expiries + p.late::int,
                lease_until = now() + $2::float8 * interval '1 second', started_at = now(),
                worker = $3
            FROM picked p WHERE j.id = p.id
            RETURNING p.late, j.due, {_J}"""

    def stats(self, filtered: bool) -> str:
        s = self.schema
        where = " AND queue = ANY($1::text[])" if filtered else ""
        return f"""
            SELECT queue, sum(queued)::int AS queued, sum(scheduled)::int AS scheduled,
                   sum(running)::int AS running, sum(failed)::int AS failed
            FROM (
                SELECT queue, count(*) FILTER (WHERE due <= now()) AS queued,
                       count(*) FILTER (WHERE due > now()) AS scheduled,
                       0 AS running, 0 AS failed
                FROM {s}.jobs WHERE state = 'queued'{where} GROUP BY queue
                UNION ALL
                SELECT queue, 0, 0, count(*), 0
                FROM {s}.jobs WHERE state = 'running'{where} GROUP BY queue
                UNION ALL
                SELECT queue, 0, 0, 0, count(*)
                FROM {s}.jobs WHERE state = 'failed' AND expires_at > now(){where}
                GROUP BY queue
            ) x GROUP BY queue"""

    def purge(self, filtered: bool) -> str:
        s = self.schema
        where = " WHERE queue = ANY($1::text[])" if filtered else ""
        return f"""
            WITH d AS (DELETE FROM {s}.jobs{where} RETURNING state),
                 t AS (DELETE FROM {s}.ticks{where} RETURNING 1)
            SELECT (SELECT count(*) FROM d WHERE state IN ('queued', 'running', 'failed'))
                       AS jobs,
                   (SELECT count(*) FROM t) AS ticks"""
