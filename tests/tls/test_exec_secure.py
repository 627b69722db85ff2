"""``alloc exec`` on a secure cluster (real processes): the server relays the session to the
agent over mutual TLS (the agent verified as its node, the server presenting its
certificate), and the agent's endpoint refuses a WebSocket without a server's certificate
before anything else (the guard sees upgraded connections too)."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import PODIUM
from tests.tls.conftest import SecureCluster
from tests.tls.test_secure_cluster import run_sleeper

Make = Callable[..., SecureCluster]


def test_exec_is_relayed_over_mutual_tls(secure_cluster: Make, tmp_path: Path) -> None:
    c = secure_cluster()
    c.start_agent("a1", "--join-token", c.token())
    alloc = run_sleeper(c, tmp_path, "web")
    alloc_id = str(alloc["id"])

    done = c.cli("alloc", "exec", alloc_id[:8], "--", "/bin/sh", "-c", "echo over-tls; exit 9")
    assert done.returncode == 9, done.stderr
    assert done.stdout == "over-tls\n"

    # the agent's own endpoint: a cluster certificate that is not a server's is refused
    (node,) = c.get("/v1/nodes")
    tls_dir = c.agent_dir("a1") / "agent" / "tls"
    ctx = ssl.create_default_context(cafile=str(c.ca))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(tls_dir / "agent.crt"), str(tls_dir / "agent.key"))
    url = node["http_addr"].replace("https://", "wss://")
    with pytest.raises(InvalidStatus) as refused:
        connect(
            f"{url}/v1/client/allocation/{alloc_id}/exec?task=t&command=%5B%22id%22%5D",
            ssl=ctx,
        )
    assert refused.value.response.status_code == 403
    assert b"for a cluster server" in (refused.value.response.body or b"")

    # and a token without alloc-exec gets nothing through the server either
    anonymous = subprocess.run(
        [*PODIUM, "alloc", "exec", alloc_id, "--", "id"],
        capture_output=True,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if k != "PODIUM_TOKEN"},
            "PODIUM_ADDR": c.addr,
            "PODIUM_CACERT": str(c.ca),
        },
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert anonymous.returncode == 1 and "alloc-exec" in anonymous.stderr, anonymous.stderr
