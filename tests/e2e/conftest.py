"""End-to-end tests run the ``sitq`` command; keep the developer's SITQ_* out of them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_sitq_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("SITQ_"):
            monkeypatch.delenv(name)
    yield
