"""The fixtures every HA test shares: three real etcd members, and three real
``podium server --etcd`` processes on them (tests/ha/cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha.cluster import EtcdCluster, HACluster


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    members = EtcdCluster.start(3, tmp_path / "etcd")
    yield members
    members.close()


@pytest.fixture
def cluster(tmp_path: Path, etcd: EtcdCluster) -> Iterator[HACluster]:
    servers = HACluster(tmp_path, etcd)
    try:
        yield servers
    finally:
        servers.close()
