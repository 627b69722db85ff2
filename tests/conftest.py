"""What every test shares.

``PODIUM_TESTS_NO_SKIP=1`` (set by ``.ci/run``) turns every skip into a failure that gives the
skip's reason: CI installs and starts everything the suite needs (root, iproute2, cgroups, a
Docker Engine and the test image), so there a skip means something that should run did not.
A developer's machine without, say, a Docker Engine still skips those tests and says why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

NO_SKIP = os.environ.get("PODIUM_TESTS_NO_SKIP", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped where no skip is allowed (PODIUM_TESTS_NO_SKIP=1): {reason}"
