"""The in-process cluster fixture of tests/server, for the job types tests."""

from tests.server.conftest import cluster

__all__ = ["cluster"]
