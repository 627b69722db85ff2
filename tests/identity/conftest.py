"""The ACL tests' in-process servers (tests/acl/conftest.py), for workload identity."""

from tests.acl.conftest import open_server, secure

__all__ = ["open_server", "secure"]
