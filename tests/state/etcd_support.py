"""The skip of the store's etcd tests where etcd is not installed (their fixtures, a member
per module and a cluster name per test, are in tests/state/conftest.py)."""

from __future__ import annotations

import pytest

from podium.state.etcd_member import etcd_binary


def need_etcd() -> None:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian's etcd-server package: /usr/bin/etcd)")
