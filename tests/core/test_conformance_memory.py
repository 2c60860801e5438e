"""MemoryBackend passes the conformance suite."""

from __future__ import annotations

import uuid

import pytest

from sitq.testing import BackendConformance


class TestMemoryBackend(BackendConformance):
    @pytest.fixture
    def backend_url(self) -> str:
        return f"memory://conformance-{uuid.uuid4().hex[:8]}"
