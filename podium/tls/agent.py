"""An agent's TLS material, in ``<agent data dir>/tls/`` (every file 0600): ``agent.key``
(made here; it never leaves the machine), ``agent.crt`` (signed by the cluster CA through
a CSR) and ``ca.crt`` (the CAs it trusts: the one the join token's fingerprint pinned
when it joined, then what the server, over connections verified with those, says to trust:
two during a CA rotation).  A restarted agent reuses them; no token is needed again while the certificate
is in date.

Two SSL contexts are made once and renewed in place (``load_cert_chain``): the client one
(servers verified against the CA, host names checked, this certificate presented) and the
server one of the agent's own endpoint (a server's certificate required).  A CA added to
the trust is loaded into both; a CA dropped from it makes a new client context (handed to
``on_client_context``: the agent's connection pool takes it for its next connections) and a
new inner context of the endpoint (:class:`podium.tls.server.ServingContext`).
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from podium.tls import TLSError
from podium.tls.ca import (
    PrivateKey,
    fingerprint,
    key_pem,
    load_cert,
    load_key,
    make_csr,
    new_key,
    now,
    renew_time,
)
from podium.tls.files import SECRET_MODE, private_dir, write_file
from podium.tls.identity import PeerIdentity, identity_of
from podium.tls.server import ServingContext, client_context
from podium.tls.trust import bundle_pem, fingerprints, issuer_of, split_bundle

KEY_FILE = "agent.key"
CERT_FILE = "agent.crt"
CA_FILE = "ca.crt"


class AgentTLS:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key_path = directory / KEY_FILE
        self.cert_path = directory / CERT_FILE
        self.ca_path = directory / CA_FILE
        try:
            ca_pem = self.ca_path.read_bytes()
            cert_pem = self.cert_path.read_bytes()
        except OSError as exc:
            raise TLSError(f"cannot read the agent's TLS files in {directory}: {exc}") from exc
        self.trusted: list[x509.Certificate] = split_bundle(ca_pem, str(self.ca_path))
        self._set_cert(load_cert(cert_pem, str(self.cert_path)))
        if self.cert.not_valid_after_utc <= now():
            raise TLSError(
                f"this agent's certificate ({self.cert_path}) expired on "
                f"{self.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC: join again with "
                "--join-token (a current token from `podium join-token agent`)"
            )
        self.renewals = 0
        self.client_context = client_context(self.ca_pem, self.cert_path, self.key_path)
        self._client_contexts = [self.client_context]
        """Every client context handed out: a holder the hook did not reach keeps its
        renewed certificate (and the CAs it trusted)."""
        self.serving = ServingContext(self.ca_pem, self.cert_path, self.key_path, True)
        self.server_context = self.serving.front
        self.on_client_context: list[Callable[[ssl.SSLContext], None]] = []
        """Called with the new client context when a CA is dropped from the trust."""

    @property
    def ca_pem(self) -> bytes:
        return bundle_pem(self.trusted)

    @property
    def ca(self) -> x509.Certificate:
        """The first CA trusted (the one that signed when this agent last heard)."""
        return self.trusted[0]

    def fingerprints(self) -> list[str]:
        return fingerprints(self.trusted)

    def set_trust(self, pem: bytes) -> bool:
        """Trust exactly the CAs of ``pem`` (a bundle the server sent over a connection
        verified with the CAs trusted so far); answers whether anything changed."""
        certs = split_bundle(pem, "the CA bundle the server sent")
        before, after = set(self.fingerprints()), set(fingerprints(certs))
        if before == after:
            return False
        added = [c for c in certs if fingerprint(c) not in before]
        self.trusted = certs
        write_file(self.ca_path, self.ca_pem, SECRET_MODE)
        if after >= before:
            pem_added = bundle_pem(added)
            for ctx in self._client_contexts:
                ctx.load_verify_locations(cadata=pem_added.decode())
            self.serving.add_trust(pem_added)
            return True
        self.client_context = client_context(self.ca_pem, self.cert_path, self.key_path)
        self._client_contexts.append(self.client_context)
        self.serving.replace_trust(self.ca_pem, self.cert_path, self.key_path)
        for callback in list(self.on_client_context):
            callback(self.client_context)
        return True

    def _set_cert(self, cert: x509.Certificate) -> None:
        identity = identity_of(cert)
        if identity is None or identity.role != "agent":
            raise TLSError(f"{self.cert_path} is not a Podium agent certificate")
        self.cert = cert
        self.identity: PeerIdentity = identity

    @staticmethod
    def exists(directory: Path) -> bool:
        return all((directory / f).exists() for f in (KEY_FILE, CERT_FILE, CA_FILE))

    @staticmethod
    def store(directory: Path, key: PrivateKey, cert_pem: bytes, ca_pem: bytes) -> None:
        """Keep a joined agent's key, certificate and CA (the certificate last: its presence
        marks a complete set)."""
        private_dir(directory)
        write_file(directory / CA_FILE, ca_pem, SECRET_MODE)
        write_file(directory / KEY_FILE, key_pem(key), SECRET_MODE)
        write_file(directory / CERT_FILE, cert_pem, SECRET_MODE)

    @property
    def node_id(self) -> str:
        assert self.identity.node_id is not None
        return self.identity.node_id

    def seconds_to_renewal(self) -> float:
        return max(0.0, (renew_time(self.cert) - now()).total_seconds())

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    @staticmethod
    def new_request(name: str) -> tuple[PrivateKey, bytes]:
        """A fresh key and the CSR for it."""
        key = new_key()
        return key, make_csr(key, name)

    def install(self, key: PrivateKey, cert_pem: bytes) -> None:
        """A renewed certificate: checked (this CA signed it, for this key and node), kept,
        and loaded into the live contexts."""
        cert = load_cert(cert_pem, "the renewed certificate")
        if issuer_of(cert, self.trusted) is None:
            raise TLSError(
                "the renewed certificate is not signed by the cluster CA (by none of the CAs this agent trusts)"
            )
        if cert.public_key() != key.public_key():
            raise TLSError("the renewed certificate is not for the key this agent sent")
        identity = identity_of(cert)
        if identity is None or identity.node_id != self.identity.node_id:
            raise TLSError("the renewed certificate names another node")
        write_file(self.key_path, key_pem(key), SECRET_MODE)
        write_file(self.cert_path, cert_pem, SECRET_MODE)
        self._set_cert(cert)
        for ctx in self._client_contexts:
            ctx.load_cert_chain(self.cert_path, self.key_path)
        self.serving.load_cert_chain(self.cert_path, self.key_path)
        self.renewals += 1

    def key(self) -> PrivateKey:
        return load_key(self.key_path.read_bytes(), str(self.key_path))
