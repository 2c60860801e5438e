"""Names of the queues and exchanges one backend uses, all under its ``prefix``.

Parts are joined with ``:``, which never appears inside an encoded part, so a sitq queue
called ``jobs:dead`` cannot collide with the dead letters of ``jobs``. A sitq queue name
made of ``[A-Za-z0-9_.-]`` (up to 100 characters) is used as it is, anything else as a
SHA-1, so every AMQP name stays under the 255-byte limit.
"""

from __future__ import annotations

import hashlib
import re

_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,100}")

#: Delayed messages step through binary TTL levels: level ``k`` holds a message for
#: ``DELAY_UNIT * 2**k`` seconds. 36 levels reach 21 years.
DELAY_UNIT = 0.01
DELAY_LEVELS = 36


def _part(kind: str, value: str) -> str:
    if _SAFE.fullmatch(value):
        return f"{kind}.{value}"
    return f"h{kind}.{hashlib.sha1(value.encode()).hexdigest()}"


def check_prefix(prefix: str) -> str:
    if not _SAFE.fullmatch(prefix) or len(prefix) > 40:
        raise ValueError(
            f"prefix must be 1-40 characters of [A-Za-z0-9_.-], got {prefix!r}"
        )
    return prefix


class Names:
    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        self.dlx = f"{prefix}:dlx"
        self.registry = f"{prefix}:queues"

    def work(self, queue: str) -> str:
        """The durable queue jobs of ``queue`` wait in (``x-max-priority``)."""
        return f"{self.prefix}:{_part('q', queue)}"

    def dead(self, queue: str) -> str:
        return self.work(queue) + ":dead"

    def running(self, queue: str) -> str:
        """An always-empty queue: one consumer on it per running job (its count)."""
        return self.work(queue) + ":running"

    def due(self, queue: str) -> str:
        """The fanout exchange the last delay level dead-letters into; feeds ``work``."""
        return self.work(queue) + ":due"

    def level(self, queue: str, k: int) -> str:
        """Delay level ``k``: a topic exchange and a TTL queue of the same name."""
        return f"{self.work(queue)}:delay.{k}"

    def record(self, job_id: str) -> str:
        """The job's record queue: one message holding its state, then its result."""
        return f"{self.prefix}:{_part('job', job_id)}"

    def journal(self, queue: str) -> str:
        """Every job ever created in ``queue`` (id and key), until its record expires:
        what ``purge`` reads to find the records and keys to delete."""
        return self.work(queue) + ":journal"

    def ticks(self, queue: str) -> str:
        """A record: the cron ticks claimed for schedules enqueueing into ``queue``."""
        return self.work(queue) + ":ticks"

    def key(self, queue: str, key: str) -> str:
        """An idempotency key of ``queue``: a queue holding the id of the job that has it."""
        return f"{self.work(queue)}:key.{hashlib.sha1(key.encode()).hexdigest()}"


def delay_route(units: int) -> tuple[int, str]:
    """The entry level and routing key for a delay of ``units`` (``>= 1``).

    The key has one word per level, most significant first: ``"1"`` where the message
    waits in that level's queue, ``"0"`` where it passes straight to the next level.
    """
    bits = format(units, f"0{DELAY_LEVELS}b")
    return units.bit_length() - 1, ".".join(bits)


def level_pattern(k: int, bit: str) -> str:
    """Binding key matching a routing key whose word for level ``k`` is ``bit``."""
    words = ["*"] * DELAY_LEVELS
    words[DELAY_LEVELS - 1 - k] = bit
    return ".".join(words)
