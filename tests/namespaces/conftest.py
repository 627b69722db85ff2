"""The e2e suite's real dev agent, for the namespace tests that run one."""

from tests.e2e.conftest import dev_agent  # noqa: F401
