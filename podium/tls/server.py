"""A secure server's TLS state: the CA, its own certificate, the join token, and the
certificates it issued.  Kept in ``<data_dir>/server/tls/``:

===============  =====  ==============================================================
file             mode   what
===============  =====  ==============================================================
ca.crt           0644   the cluster CA's certificate (what clients pin or trust)
ca.key           0600   the CA's key; never sent anywhere (absent with ``--ca-key``)
server.crt       0600   this server's certificate (renewed at two thirds of its life)
server.key       0600   its key
join.key         0600   the key join-token secrets are derived from
join.json        0600   the current join token's generation and secret's SHA-256
nodes.json       0600   per node id: name, serial and expiry of its latest certificate
===============  =====  ==============================================================

The SSL contexts are made once and kept: a renewal loads the new certificate into the
same objects (``load_cert_chain`` on a live context applies to the handshakes that follow),
so listeners and connection pools pick it up without a restart.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import ssl
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from podium.tls import TLSError
from podium.tls.ca import (
    DEFAULT_CERT_TTL,
    DEFAULT_REGION,
    CertificateAuthority,
    Issued,
    key_pem,
    load_cert,
    make_csr,
    new_key,
    now,
    renew_time,
)
from podium.tls.files import SECRET_MODE, private_dir, write_file
from podium.tls.identity import PeerIdentity
from podium.tls.token import JoinToken, JoinTokens

NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
"""A node id must be one DNS label: it becomes ``<id>.node.podium`` in its certificate."""
NAME_MAX = 128


class JoinRefused(TLSError):
    """A join or renewal that is refused; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_node(node_id: str, name: str) -> None:
    if not NODE_ID_RE.match(node_id):
        raise JoinRefused(
            400, "node_id must be letters, digits and '-', 1-63 characters (one DNS label)"
        )
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise JoinRefused(
            400, f"name must be 1-{NAME_MAX} printable characters (no control characters)"
        )


def server_context(ca_pem: bytes, cert: Path, key: Path, require_client: bool) -> ssl.SSLContext:
    """What a listener serves with: ``cert``, and client certificates checked against the
    CA (required, or optional: the API also serves people who present none)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cadata=ca_pem.decode())
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    return ctx


def client_context(ca_pem: bytes, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """What a caller verifies servers with (the CA, host names checked), presenting
    ``cert`` when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem.decode())
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


class ServerTLS:
    def __init__(
        self,
        directory: Path,
        ca: CertificateAuthority,
        *,
        cert_ttl: float = DEFAULT_CERT_TTL,
        addresses: Iterable[str] = (),
        region: str = DEFAULT_REGION,
        ca_created: bool = False,
    ) -> None:
        self.directory = private_dir(directory)
        self.ca = ca
        self.ca_created = ca_created
        self.cert_ttl = cert_ttl
        self.addresses = list(addresses)
        self.region = region
        self.advertise = ""
        """The API's URL for agents (``https://HOST:PORT``), set by whoever binds it."""
        self.tokens = JoinTokens(directory)
        self._lock = threading.Lock()
        self.cert_path = directory / "server.crt"
        self.key_path = directory / "server.key"
        self.renewals = 0
        self._issue_own()
        self.server_context = server_context(
            ca.cert_pem, self.cert_path, self.key_path, require_client=False
        )
        self.client_context = client_context(ca.cert_pem, self.cert_path, self.key_path)
        self._nodes_path = directory / "nodes.json"
        self._nodes: dict[str, dict[str, Any]] = {}
        if self._nodes_path.exists():
            try:
                self._nodes = dict(json.loads(self._nodes_path.read_text()))
            except ValueError as exc:
                raise TLSError(f"{self._nodes_path} is damaged ({exc})") from exc

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        ca_cert: Path | None = None,
        ca_key: Path | None = None,
        cert_ttl: float = DEFAULT_CERT_TTL,
        addresses: Iterable[str] = (),
    ) -> ServerTLS:
        """The TLS state in ``directory``; the CA from ``ca_cert``/``ca_key`` when given
        (both or neither), else the one kept there (created on first use)."""
        if (ca_cert is None) != (ca_key is None):
            raise TLSError("give both --ca-cert and --ca-key, or neither")
        private_dir(directory)
        if ca_cert is not None and ca_key is not None:
            ca, created = CertificateAuthority.load(ca_cert, ca_key), False
        else:
            ca, created = CertificateAuthority.load_or_create(directory)
        return cls(directory, ca, cert_ttl=cert_ttl, addresses=addresses, ca_created=created)

    # ------------------------------------------------------------------ own certificate
    def _issue_own(self) -> Issued:
        key = new_key()
        issued = self.ca.issue_server(key.public_key(), self.addresses, self.cert_ttl, self.region)
        write_file(self.key_path, key_pem(key), SECRET_MODE)
        write_file(self.cert_path, issued.cert_pem, SECRET_MODE)
        self.cert = issued.cert
        return issued

    def renew_own(self) -> Issued:
        """A new certificate for this server, loaded into the live contexts."""
        with self._lock:
            issued = self._issue_own()
            self.server_context.load_cert_chain(self.cert_path, self.key_path)
            self.client_context.load_cert_chain(self.cert_path, self.key_path)
            self.renewals += 1
        return issued

    def seconds_to_renewal(self) -> float:
        return max(0.0, (renew_time(self.cert) - now()).total_seconds())

    # ------------------------------------------------------------------ join tokens
    def join_token(self) -> JoinToken:
        return self.tokens.current(self.ca.fingerprint)

    def rotate_join_token(self) -> JoinToken:
        with self._lock:
            self.tokens.rotate()
        return self.join_token()

    # ------------------------------------------------------------------ agents
    def join(self, secret: str, csr: str, node_id: str, name: str) -> Issued:
        """An agent's first certificate, for the holder of the current join token."""
        if not self.tokens.check(secret):
            raise JoinRefused(
                401,
                "the join token is not this cluster's current one (rotated, or mistyped): "
                "ask an operator for `podium join-token agent`",
            )
        check_node(node_id, name)
        with self._lock:
            held = self._nodes.get(node_id)
            if held is not None and dt.datetime.fromisoformat(held["not_after"]) > now():
                raise JoinRefused(
                    409,
                    f"node {node_id} holds a certificate until {held['not_after']}: it renews "
                    "with that one; a join token cannot take its identity over",
                )
            issued = self.ca.issue_agent(csr, node_id, name, self.cert_ttl)
            self._record(node_id, name, issued)
        return issued

    def renew_agent(self, identity: PeerIdentity, csr: str) -> Issued:
        """A new certificate for the agent ``identity`` names (it proved it holds the current
        one in the handshake); the same node id and name."""
        if identity.role != "agent" or identity.node_id is None:
            raise JoinRefused(403, "only an agent's certificate can be renewed here")
        if identity.expired:
            raise JoinRefused(401, "the certificate expired: join again with a join token")
        with self._lock:
            issued = self.ca.issue_agent(csr, identity.node_id, identity.name, self.cert_ttl)
            self._record(identity.node_id, identity.name, issued)
        return issued

    def _record(self, node_id: str, name: str, issued: Issued) -> None:
        self._nodes[node_id] = {
            "name": name,
            "serial": str(issued.serial),
            "not_after": issued.not_after.isoformat(),
        }
        write_file(self._nodes_path, json.dumps(self._nodes, indent=1).encode(), SECRET_MODE)

    def issue_local_agent(self, directory: Path, node_id: str, name: str) -> None:
        """The certificate of an agent in this process (``--dev --secure``): made here,
        no token needed; stored where a joined agent keeps its own."""
        from podium.tls.agent import AgentTLS

        key = new_key()
        issued = self.ca.issue_agent(make_csr(key, name), node_id, name, self.cert_ttl)
        self._record(node_id, name, issued)
        AgentTLS.store(directory, key, issued.cert_pem, self.ca.cert_pem)

    def nodes(self) -> dict[str, dict[str, Any]]:
        return dict(self._nodes)

    def describe(self) -> dict[str, Any]:
        cert = load_cert(self.cert_path.read_bytes())
        return {
            "ca_fingerprint": self.ca.fingerprint,
            "ca_subject": self.ca.cert.subject.rfc4514_string(),
            "ca_not_after": self.ca.cert.not_valid_after_utc.isoformat(),
            "server_serial": str(cert.serial_number),
            "server_not_after": cert.not_valid_after_utc.isoformat(),
            "server_renewals": self.renewals,
            "cert_ttl": self.cert_ttl,
            "join_token_generation": self.tokens.generation,
            "nodes": len(self._nodes),
        }
