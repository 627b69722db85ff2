"""The metrics tests use the server tests' in-process cluster and the ACL tests' secure
server (same fixtures, imported), and the e2e tests' real ``podium agent --dev``."""

from __future__ import annotations

from tests.acl.conftest import secure  # noqa: F401
from tests.e2e.conftest import dev_agent  # noqa: F401
from tests.server.conftest import cluster  # noqa: F401
