"""The driver matrix: one row per backend, tested at the lowest driver it declares.

``uv.lock`` pins the newest release of every driver, so the ordinary ``uv run pytest``
covers the newest end of each range. ``test_driver_matrix.py`` covers the lowest end: for
each row it builds a throwaway virtualenv (uv; kept under ``.venv-matrix/`` and reused
while the lock and the pin are unchanged) holding the workspace with the row's driver
pinned to the lower bound of the distribution's ``pyproject.toml``, runs the row's tests
there, and fails when they fail.

**A new backend adds one row** to ``ROWS`` below: its distribution directory, the name
of its driver's distribution on PyPI, and the test paths that exercise it (its
conformance subclass and its own tests). The lower bound must be a ``>=`` in that
distribution's ``dependencies``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Row:
    dist: str  #: distribution directory under the repository root
    driver: str  #: the driver's distribution name (PyPI)
    tests: tuple[str, ...]  #: test paths, relative to the repository root
    #: Packages the driver pins to a narrow range (aio-pika 9 needs aiormq 6): dropped
    #: from the lock's export, so the resolver picks what the lowest driver accepts.
    unpinned: tuple[str, ...] = ()


# sitq-sqlite has no row: its driver is Python's own sqlite3 module (the header names
# the SQLite library's version).
ROWS: tuple[Row, ...] = (
    Row("sitq-redis", "redis", ("tests/redis",)),
    Row("examples/sitq-rabbitmq", "aio-pika", ("examples/sitq-rabbitmq/tests",),
        unpinned=("aiormq", "pamqp")),
)

#: What each row ran, for the summary at the end of the session (conftest.py prints it).
REPORT: list[str] = []


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lowest(row: Row) -> str:
    """The lower bound (``>=X``) declared for ``row.driver`` in ``row.dist``'s
    pyproject.toml: the oldest driver release users may get."""
    from packaging.requirements import Requirement

    pyproject = ROOT / row.dist / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    for text in project.get("dependencies", []):
        req = Requirement(text)
        if _canonical(req.name) != _canonical(row.driver):
            continue
        bounds = [s.version for s in req.specifier if s.operator == ">="]
        if len(bounds) != 1:
            raise ValueError(f"{pyproject}: {text!r} needs exactly one '>=' lower bound "
                             "for the driver matrix")
        return bounds[0]
    raise ValueError(f"{pyproject} does not depend on {row.driver!r}")
