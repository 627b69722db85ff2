"""Fixtures of the store's etcd tests: one real etcd member per test module (skipped where
etcd is not installed) and a cluster name of each test's own under /podium/."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from podium.state.etcd_member import EtcdCluster
from tests.state.etcd_support import need_etcd


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    need_etcd()
    cluster = EtcdCluster.start(1, tmp_path_factory.mktemp("etcd"))
    yield cluster
    cluster.close()


_names = iter(range(1_000_000))


@pytest.fixture
def name() -> str:
    """A cluster name of this test's own under /podium/ (the member is the module's)."""
    return f"t{os.getpid()}-{next(_names)}"
