"""SQLiteBackend passes the shared conformance suite unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from sitq.testing import BackendConformance


class TestSQLiteBackend(BackendConformance):
    @pytest.fixture
    def backend_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'conformance.db'}"

    @pytest.fixture
    def unreachable_backend_url(self, tmp_path: Path) -> str:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a file where the database's directory should be")
        return f"sqlite:///{blocker / 'conformance.db'}"
