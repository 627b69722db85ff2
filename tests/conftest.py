"""What every test shares.

Tests that drive the Docker Engine run on one pytest-xdist worker, one at a time, as they do
without xdist (``xdist_group`` DOCKER, given here by file and name so no test file has to
remember it): started side by side, a busy engine hands a container's log to the driver late
and loses an OOM verdict now and then, and such tests would fail for the engine's sake.

``PODIUM_TESTS_NO_SKIP=1`` (set by ``.ci/run``) turns every skip into a failure that gives the
skip's reason: CI installs and starts everything the suite needs (root, iproute2, cgroups, a
Docker Engine and the test image), so there a skip means something that should run did not.
A developer's machine without, say, a Docker Engine still skips those tests and says why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from podium.agent import secretsdir

NO_SKIP = os.environ.get("PODIUM_TESTS_NO_SKIP", "") not in ("", "0")
DOCKER = "docker-engine"


def uses_docker(item: pytest.Item) -> bool:
    """Tests of the docker driver, of docker jobs end to end, and of Compose run for real."""
    folder, name = item.path.parent.name, item.path.name
    if folder in ("drivers", "e2e") and ("docker" in name or "compose" in name):
        return True
    return "docker" in item.name


LONG_GROUPS = ("tls-soak",)
"""xdist_groups of tests that run for minutes on a worker of their own: collected first, so
xdist hands them out first and they run beside the rest rather than after it."""


def _group(item: pytest.Item) -> str:
    marker = item.get_closest_marker("xdist_group")
    return str(marker.args[0]) if marker and marker.args else ""


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if uses_docker(item):
            item.add_marker(pytest.mark.xdist_group(DOCKER))
    items.sort(key=lambda item: _group(item) not in LONG_GROUPS)  # stable: order kept otherwise


@pytest.fixture(autouse=True)
def _no_secrets_mounts_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Agents running as root mount a tmpfs on each task's ``secrets/``; a test that closes
    its agent with tasks still running (as an agent shutdown leaves them) leaves those
    mounts, which are taken off here so the host's mount table stays clean.  Tests of the
    unmounting itself look at the mount table before this runs."""
    yield
    if os.geteuid() == 0:
        with open("/proc/self/mountinfo") as f:
            if secretsdir.FSNAME not in f.read():
                return
        secretsdir.unmount_under(str(tmp_path_factory.getbasetemp()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped where no skip is allowed (PODIUM_TESTS_NO_SKIP=1): {reason}"
