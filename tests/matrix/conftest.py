"""Prints what the driver matrix ran, with the driver versions, at the end of the run."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.matrix.drivers import REPORT

    if REPORT:
        terminalreporter.section("driver matrix (lowest declared drivers)")
        for line in REPORT:
            terminalreporter.write_line(line)
