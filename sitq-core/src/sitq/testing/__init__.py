"""Test helpers for sitq and its plugins: the backend conformance suite.

``from sitq.testing import BackendConformance`` needs pytest and anyio installed.
"""

from .conformance import BackendConformance, make_job

__all__ = ["BackendConformance", "make_job"]
