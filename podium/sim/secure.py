"""``podium sim --secure``: the simulated cluster as a secure one, to measure what TLS and
ACL cost at scale (issue 13's target: within 15% of the plain simulation).

What is on, as under ``podium server --secure``:

- the HTTP API is served over TLS, with a cluster CA made in the simulation's temporary
  directory (:class:`podium.tls.server.ServerTLS`) and a server certificate for 127.0.0.1;
- ACL is on (``ServerConfig(acl=True)``); the simulation bootstraps it and submits its
  jobs, marks nodes ineligible and runs the probe with the management token;
- every simulated agent has its own certificate from that CA, for its own node id, and
  talks to the server over real HTTPS on loopback (its own SSL context and connection
  pool, as each machine has), registers its node with that certificate (no token: the
  ACL lets a new node register with the certificate the CA issued to it) and sends the
  node secret the registration answered on every agent route, as a real agent does.

How agents get their certificates.  A real agent joins (``POST /v1/agent/join`` with the
join token and a CSR); here the server's process issues them from the CA directly, from a
CSR per node as a join would (:func:`issue_agents`), and hands each worker process a
directory with one PEM file per node (its key and certificate), the CA and the node ids.
Why not the join route: a join is a one-off per agent, before any placement, and the
route is tested on its own (tests/tls); at 5,000 agents it would be 10,000 extra TLS
handshakes and 5,000 rewrites of the server's growing ``nodes.json`` (quadratic) before
the clock even starts, measuring nothing the target is about.  The CA key never leaves
the server's process; the workers only read their nodes' keys.

Each agent loads only its client context (:func:`podium.tls.server.client_context`):
a simulated agent serves no endpoint, so it needs no server context.  Measured on the
development VM: ~26 KB of RSS per client context (~130 MB for 5,000 agents), ~60 KB for
an :class:`podium.tls.agent.AgentTLS` with both.
"""

from __future__ import annotations

import json
import os
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from podium.tls.agent import AgentTLS
from podium.tls.ca import ROLE_AGENT, key_pem
from podium.tls.files import private_dir
from podium.tls.identity import IDENTITY_KEY
from podium.tls.server import ServerTLS, client_context
from podium.tls_runtime import TLSProtocol

CA_FILE = "ca.crt"
NODES_FILE = "nodes.json"
LOOPBACK = "127.0.0.1"


def server_tls(directory: Path) -> ServerTLS:
    """The simulation's cluster CA and server certificate (for 127.0.0.1), in ``directory``."""
    return ServerTLS.open(directory, addresses=[LOOPBACK])


def sim_node_id(index: int) -> str:
    """The node id of the ``index``-th simulated node: a UUID, as an agent makes, but known
    before its agent starts (its certificate names it)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"podium-sim/node/{index}"))


def issue_agents(tls: ServerTLS, names: list[str], directory: Path) -> None:
    """A certificate for each simulated node (``names[i]`` is node ``sim_node_id(i)``):
    a key and CSR made as the agent would, signed by the CA as a join would; written as
    ``<name>.pem`` (key and certificate, 0600) beside ``ca.crt`` and ``nodes.json``."""
    private_dir(directory)
    (directory / CA_FILE).write_bytes(tls.ca.cert_pem)
    nodes: dict[str, str] = {}
    for i, name in enumerate(names):
        node_id = sim_node_id(i)
        key, csr = AgentTLS.new_request(name)
        issued = tls.ca.issue_agent(csr.decode(), node_id, name, tls.cert_ttl)
        # no fsync (write_file's): these files live as long as the simulation
        fd = os.open(directory / f"{name}.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem(key) + issued.cert_pem)
        nodes[name] = node_id
    (directory / NODES_FILE).write_text(json.dumps(nodes))


@dataclass
class AgentCerts:
    """A worker process's view of :func:`issue_agents`' directory."""

    directory: Path
    ca_pem: bytes = b""
    nodes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> AgentCerts:
        return cls(
            directory,
            (directory / CA_FILE).read_bytes(),
            json.loads((directory / NODES_FILE).read_text()),
        )

    def node_id(self, name: str) -> str:
        return self.nodes[name]

    def context(self, name: str) -> ssl.SSLContext:
        """The client SSL context of agent ``name``: the CA verifies the server, its
        certificate is presented."""
        pem = self.directory / f"{name}.pem"
        return client_context(self.ca_pem, pem, pem)


@dataclass
class TLSCounts:
    """What the simulation's TLS listener saw: connections, those with an agent's
    certificate, and the node ids those certificates named."""

    connections: int = 0
    agent_connections: int = 0
    nodes: set[str] = field(default_factory=set)

    def figures(self) -> dict[str, int]:
        return {
            "tls_connections": self.connections,
            "agent_cert_connections": self.agent_connections,
            "agent_cert_nodes": len(self.nodes),
        }


def counting_protocol(counts: TLSCounts) -> type[TLSProtocol]:
    """uvicorn's TLS protocol (:class:`podium.tls_runtime.TLSProtocol`), which also counts
    each connection into ``counts`` once its handshake is done (once per connection, not
    per request: nothing on the measured request path)."""

    class CountingTLSProtocol(TLSProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            counts.connections += 1
            tls = getattr(self.app, "tls", None)
            identity = tls.get(IDENTITY_KEY) if isinstance(tls, dict) else None
            if identity is not None and identity.role == ROLE_AGENT:
                counts.agent_connections += 1
                counts.nodes.add(identity.node_id)

    return CountingTLSProtocol


def uvicorn_args(tls: ServerTLS, counts: TLSCounts) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that serve the API over the server's TLS context."""
    context = tls.server_context
    return {
        "http": counting_protocol(counts),
        "ssl_context_factory": lambda _config, _default: context,
    }


async def refusals(address: str, ca_pem: bytes, node_id: str) -> dict[str, int]:
    """What the secure server answers a caller with neither token nor certificate: the
    status of ``GET /v1/jobs`` (ACL: 401) and of a node's sync (TLS guard: 401)."""
    verify = ssl.create_default_context(cadata=ca_pem.decode())
    async with httpx.AsyncClient(base_url=address, verify=verify, timeout=30) as http:
        jobs = await http.get("/v1/jobs")
        sync = await http.post(
            f"/v1/client/node/{node_id}/allocations", json={"updates": [], "have": []}
        )
    return {"anonymous_jobs_status": jobs.status_code, "certless_sync_status": sync.status_code}
