"""A secure server's TLS state: the CA, its own certificate, the join token, and the
certificates it issued.  Kept in ``<data_dir>/server/tls/``:

===============  =====  ==============================================================
file             mode   what
===============  =====  ==============================================================
ca.crt           0644   the CAs trusted: the signing one first (two during a rotation)
ca.key           0600   the signing CA's key; never sent anywhere (absent with ``--ca-key``)
ca-next.*        0600   during a rotation's first phase: the new CA, trusted, not signing
rotation.json    0600   a CA rotation in progress (see :mod:`podium.tls.trust`)
server.crt       0600   this server's certificate (renewed at two thirds of its life)
server.key       0600   its key
join.key         0600   the key join-token secrets are derived from
join.json        0600   the current join token's generation and secret's SHA-256
nodes.json       0600   per node id: name, serial and expiry of its latest certificate
===============  =====  ==============================================================

The SSL contexts are made once and kept: a renewal loads the new certificate into the
same objects (``load_cert_chain`` on a live context applies to the handshakes that follow),
so listeners and connection pools pick it up without a restart.  A CA added to the trust
is loaded into the live contexts likewise; a CA dropped from it cannot be taken out of a
live context (OpenSSL's store only grows), so listeners serve through a
:class:`ServingContext` that hands each new handshake to the current context, and the
client context is replaced (its users read ``client_context`` per connection pool).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography import x509

from podium.tls import TLSError
from podium.tls.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
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
from podium.tls.files import PUBLIC_MODE, SECRET_MODE, private_dir, write_file
from podium.tls.identity import PeerIdentity
from podium.tls.token import JoinToken, JoinTokens
from podium.tls.trust import (
    NEXT_CERT_FILE,
    NEXT_KEY_FILE,
    PHASE_REISSUE,
    PHASE_TRUST,
    ROTATION_FILE,
    Rotation,
    bundle_pem,
    split_bundle,
    utcnow_iso,
)

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


class ServingContext:
    """A listener's SSL context whose trust can shrink as well as grow.

    ``front`` is what the listener was given; its SNI callback (called on every handshake,
    with or without SNI) hands the connection to the current inner context, whose CA store
    then verifies the client's certificate.  Until a CA is dropped the inner context is
    ``front`` itself."""

    def __init__(self, ca_pem: bytes, cert: Path, key: Path, require_client: bool) -> None:
        self.require_client = require_client
        self.front = server_context(ca_pem, cert, key, require_client)
        self._current = self.front
        self.front.sni_callback = self._pick

    def _pick(self, conn: Any, _name: str | None, _ctx: ssl.SSLContext) -> None:
        current = self._current
        if current is not self.front:
            conn.context = current

    def contexts(self) -> list[ssl.SSLContext]:
        return [self.front] if self._current is self.front else [self.front, self._current]

    def load_cert_chain(self, cert: Path, key: Path) -> None:
        for ctx in self.contexts():
            ctx.load_cert_chain(cert, key)

    def add_trust(self, ca_pem: bytes) -> None:
        for ctx in self.contexts():
            ctx.load_verify_locations(cadata=ca_pem.decode())

    def replace_trust(self, ca_pem: bytes, cert: Path, key: Path) -> None:
        """From the next handshake on, trust exactly ``ca_pem``."""
        self._current = server_context(ca_pem, cert, key, self.require_client)


def client_context(ca_pem: bytes, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """What a caller verifies servers with (the CA, host names checked), presenting
    ``cert`` when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem.decode())
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


class RotationRefused(JoinRefused):
    """``rotate-ca`` cannot start (or finish) now."""


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
        trusted: list[x509.Certificate] | None = None,
        brought: bool = False,
    ) -> None:
        self.directory = private_dir(directory)
        self.ca = ca
        self.ca_created = ca_created
        self.brought = brought
        """The CA came from ``--ca-cert/--ca-key``: the operator rotates it, not the server."""
        self.trusted: list[x509.Certificate] = [ca.cert] + [
            c for c in (trusted or []) if c != ca.cert
        ]
        self.rotation: Rotation | None = None
        self.next_ca: CertificateAuthority | None = None
        if not brought:
            self._resume_rotation()
        self.cert_ttl = cert_ttl
        self.addresses = list(addresses)
        self.region = region
        self.advertise = ""
        """The API's URL for agents (``https://HOST:PORT``), set by whoever binds it."""
        self.tokens = JoinTokens(directory)
        self._lock = threading.RLock()
        self.cert_path = directory / "server.crt"
        self.key_path = directory / "server.key"
        self.renewals = 0
        self.version = 0
        """Bumped whenever the trust or the rotation changes (agents wait on it)."""
        self.on_change: list[Callable[[], None]] = []
        self._issue_own()
        self.serving = ServingContext(
            self.trust_pem, self.cert_path, self.key_path, require_client=False
        )
        self.server_context = self.serving.front
        self.client_context = client_context(self.trust_pem, self.cert_path, self.key_path)
        self._nodes_path = directory / "nodes.json"
        self._nodes: dict[str, dict[str, Any]] = {}
        if self._nodes_path.exists():
            try:
                self._nodes = dict(json.loads(self._nodes_path.read_text()))
            except ValueError as exc:
                raise TLSError(f"{self._nodes_path} is damaged ({exc})") from exc
        first = self.rotation.old if self.rotation else self.ca.fingerprint
        for record in self._nodes.values():
            # recorded before rotations existed: issued by, and trusting, the only CA there was
            record.setdefault("ca_fingerprint", first)
            record.setdefault("trusts", [first])

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
            bundle = split_bundle(ca_cert.read_bytes(), str(ca_cert))
        else:
            ca, created = CertificateAuthority.load_or_create(directory)
            bundle = split_bundle((directory / CA_CERT_FILE).read_bytes())
        return cls(
            directory,
            ca,
            cert_ttl=cert_ttl,
            addresses=addresses,
            ca_created=created,
            trusted=bundle,
            brought=ca_cert is not None,
        )

    # ------------------------------------------------------------------ trust
    @property
    def trust_pem(self) -> bytes:
        """The CAs trusted, as one PEM bundle, the signing one first."""
        return bundle_pem(self.trusted)

    def fingerprints(self) -> list[str]:
        from podium.tls.ca import fingerprint

        return [fingerprint(c) for c in self.trusted]

    def _ca_named(self, subject: str) -> str:
        """The fingerprint of the trusted CA named ``subject`` ("" when none is)."""
        from podium.tls.ca import fingerprint

        for cert in self.trusted:
            if cert.subject.rfc4514_string() == subject:
                return fingerprint(cert)
        return ""

    def _changed(self) -> None:
        self.version += 1
        for callback in list(self.on_change):
            with contextlib.suppress(Exception):
                callback()

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
            self.serving.load_cert_chain(self.cert_path, self.key_path)
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
    def join(
        self, secret: str, csr: str, node_id: str, name: str, ca_fingerprint: str = ""
    ) -> Issued:
        """An agent's first certificate, for the holder of the current join token (whose
        fingerprint, when the agent sends it, must be the signing CA's)."""
        if not self.tokens.check(secret):
            raise JoinRefused(
                401,
                "the join token is not this cluster's current one (rotated, or mistyped): "
                "ask an operator for `podium join-token agent`",
            )
        if ca_fingerprint and ca_fingerprint != self.ca.fingerprint:
            raise JoinRefused(
                401,
                f"the join token pins CA {ca_fingerprint[:16]}…, but this cluster's CA is now "
                f"{self.ca.fingerprint[:16]}… (rotated with `podium tls rotate-ca`): "
                "ask an operator for a current `podium join-token agent`",
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
            self._record(node_id, name, issued, trusts=self.fingerprints())
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
            self._record(identity.node_id, identity.name, issued, issued_by=False)
        return issued

    def agent_trust(self, identity: PeerIdentity, trusts: list[str]) -> dict[str, Any]:
        """An agent says which CAs it trusts (fingerprints) and shows, by the certificate it
        presents, which CA its own is from; answers the CAs to trust, and whether to renew
        now (its certificate is not from the signing CA)."""
        if identity.role != "agent" or identity.node_id is None:
            raise JoinRefused(403, "only an agent's certificate may ask for the trusted CAs")
        with self._lock:
            record = self._nodes.get(identity.node_id)
            if record is not None:
                update: dict[str, Any] = {"trusts": sorted(set(trusts) & set(self.fingerprints()))}
                issuer = self._ca_named(identity.issuer)
                if issuer:
                    update["ca_fingerprint"] = issuer
                if any(record.get(k) != v for k, v in update.items()):
                    record.update(update)
                    self._save_nodes()
            self.advance()
            return self.trust_answer(identity)

    def trust_answer(self, identity: PeerIdentity) -> dict[str, Any]:
        return {
            "trusted": self.trust_pem.decode(),
            "signing": self.ca.fingerprint,
            "phase": self.rotation.phase if self.rotation else "",
            "renew": identity.issuer != self.ca.cert.subject.rfc4514_string(),
            "version": self.version,
        }

    def _record(
        self,
        node_id: str,
        name: str,
        issued: Issued,
        trusts: list[str] | None = None,
        issued_by: bool = True,
    ) -> None:
        """Keep what the latest certificate of ``node_id`` is.  ``ca_fingerprint``: which
        CA the certificate the agent *uses* is from; a renewal leaves it as it was
        (``issued_by=False``) until the agent presents the new certificate (its next trust
        poll): a rotation drops the old CA only once no agent can still be using it."""
        previous = self._nodes.get(node_id, {})
        self._nodes[node_id] = {
            "name": name,
            "serial": str(issued.serial),
            "not_after": issued.not_after.isoformat(),
            "ca_fingerprint": (
                self.ca.fingerprint
                if issued_by
                else previous.get("ca_fingerprint", self.ca.fingerprint)
            ),
            "trusts": trusts if trusts is not None else previous.get("trusts", []),
        }
        self._save_nodes()

    def _save_nodes(self) -> None:
        write_file(self._nodes_path, json.dumps(self._nodes, indent=1).encode(), SECRET_MODE)

    def issue_local_agent(self, directory: Path, node_id: str, name: str) -> None:
        """The certificate of an agent in this process (``--dev --secure``): made here,
        no token needed; stored where a joined agent keeps its own."""
        from podium.tls.agent import AgentTLS

        key = new_key()
        with self._lock:
            issued = self.ca.issue_agent(make_csr(key, name), node_id, name, self.cert_ttl)
            self._record(node_id, name, issued, trusts=self.fingerprints())
            AgentTLS.store(directory, key, issued.cert_pem, self.trust_pem)

    def nodes(self) -> dict[str, dict[str, Any]]:
        return dict(self._nodes)

    def _live_nodes(self) -> dict[str, dict[str, Any]]:
        """Nodes whose latest certificate is still in date: those a rotation waits for."""
        t = now()
        return {
            n: r for n, r in self._nodes.items() if dt.datetime.fromisoformat(r["not_after"]) > t
        }

    # ------------------------------------------------------------------ CA rotation
    def _resume_rotation(self) -> None:
        rotation = Rotation.load(self.directory)
        if rotation is None:
            return
        next_cert, next_key = self.directory / NEXT_CERT_FILE, self.directory / NEXT_KEY_FILE
        if rotation.phase == PHASE_TRUST:
            self.next_ca = CertificateAuthority.load(next_cert, next_key)
            self.trusted = [c for c in self.trusted if c != self.next_ca.cert] + [self.next_ca.cert]
        elif next_key.exists():
            # the switch was committed (rotation.json) but not carried out: finish it
            new = CertificateAuthority.load(next_cert, next_key)
            self._install_signing(new)
        self.rotation = rotation

    def _install_signing(self, new: CertificateAuthority) -> None:
        """``new`` signs from now on; the old CA stays trusted (second in ``ca.crt``); its
        key is deleted: nothing is signed with it again."""
        self.trusted = [new.cert] + [c for c in self.trusted if c != new.cert]
        write_file(self.directory / CA_CERT_FILE, bundle_pem(self.trusted), PUBLIC_MODE)
        write_file(self.directory / CA_KEY_FILE, key_pem(new.key), SECRET_MODE)
        for name in (NEXT_KEY_FILE, NEXT_CERT_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
        self.ca = new
        self.next_ca = None

    def _save_rotation(self) -> None:
        path = self.directory / ROTATION_FILE
        if self.rotation is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            write_file(path, self.rotation.to_json(), SECRET_MODE)

    def start_rotation(self) -> Rotation:
        """Phase ``trust``: a new CA, trusted beside the old one (which still signs)."""
        with self._lock:
            if self.brought:
                raise RotationRefused(
                    409,
                    "this server's CA was given with --ca-cert/--ca-key: rotate it by "
                    "restarting the server with the new CA's files",
                )
            if self.rotation is not None:
                raise RotationRefused(
                    409,
                    f"a CA rotation is already in progress (phase {self.rotation.phase}, "
                    f"started {self.rotation.started}): wait for it, or finish it with "
                    "`podium tls rotate-ca --finish`",
                )
            new = CertificateAuthority.create()
            write_file(self.directory / NEXT_KEY_FILE, key_pem(new.key), SECRET_MODE)
            write_file(self.directory / NEXT_CERT_FILE, new.cert_pem, SECRET_MODE)
            self.rotation = Rotation(
                phase=PHASE_TRUST,
                old=self.ca.fingerprint,
                new=new.fingerprint,
                started=utcnow_iso(),
            )
            self._save_rotation()
            self.next_ca = new
            self.trusted = [*self.trusted, new.cert]
            write_file(self.directory / CA_CERT_FILE, self.trust_pem, PUBLIC_MODE)
            self.serving.add_trust(new.cert_pem)
            self.client_context.load_verify_locations(cadata=new.cert_pem.decode())
            self._changed()
            self.advance()
            return self.rotation

    def advance(self, force: bool = False) -> None:
        """Move the rotation on when every agent whose certificate is in date is ready for
        the next phase (``force``: now, whoever is not; they must join again)."""
        with self._lock:
            if self.rotation is None:
                return
            live = self._live_nodes().values()
            if self.rotation.phase == PHASE_TRUST and (
                force or all(self.rotation.new in r.get("trusts", ()) for r in live)
            ):
                self._switch()
            if (
                self.rotation is not None
                and self.rotation.phase == PHASE_REISSUE
                and (force or all(r.get("ca_fingerprint") == self.rotation.new for r in live))
            ):
                self._finish()

    def _switch(self) -> None:
        """Phase ``reissue``: the new CA signs; this server's certificate is re-issued."""
        assert self.rotation is not None and self.next_ca is not None
        self.rotation.phase = PHASE_REISSUE
        self.rotation.switched = utcnow_iso()
        self._save_rotation()  # the commit point: a restart completes what follows
        self._install_signing(self.next_ca)
        self._issue_own()
        self.serving.load_cert_chain(self.cert_path, self.key_path)
        self.client_context.load_cert_chain(self.cert_path, self.key_path)
        self._changed()

    def _finish(self) -> None:
        """Done: only the new CA is trusted, from the next handshake on."""
        assert self.rotation is not None
        self.trusted = [self.ca.cert]
        write_file(self.directory / CA_CERT_FILE, self.trust_pem, PUBLIC_MODE)
        self.serving.replace_trust(self.trust_pem, self.cert_path, self.key_path)
        self.client_context = client_context(self.trust_pem, self.cert_path, self.key_path)
        self.rotation = None
        self._save_rotation()
        self._changed()

    def finish_rotation(self) -> None:
        """``rotate-ca --finish``: drop the old CA now; agents that have not moved over
        must join again (with a current token)."""
        with self._lock:
            if self.rotation is None:
                raise RotationRefused(409, "no CA rotation is in progress")
            self.advance(force=True)

    # ------------------------------------------------------------------ reporting
    def agents(self) -> list[dict[str, Any]]:
        """Each agent that holds a certificate: which CA it is from, whether it trusts the
        rotation's new CA."""
        t = now()
        out = []
        for node_id, r in sorted(self._nodes.items(), key=lambda kv: kv[1].get("name", "")):
            out.append(
                {
                    "node_id": node_id,
                    "name": r.get("name", ""),
                    "ca_fingerprint": r.get("ca_fingerprint", ""),
                    "trusts": r.get("trusts", []),
                    "not_after": r["not_after"],
                    "in_date": dt.datetime.fromisoformat(r["not_after"]) > t,
                }
            )
        return out

    def describe(self) -> dict[str, Any]:
        cert = load_cert(self.cert_path.read_bytes())
        rotation = None
        if self.rotation is not None:
            rotation = {
                "phase": self.rotation.phase,
                "old": self.rotation.old,
                "new": self.rotation.new,
                "started": self.rotation.started,
                "switched": self.rotation.switched,
            }
        return {
            "ca_fingerprint": self.ca.fingerprint,
            "ca_subject": self.ca.cert.subject.rfc4514_string(),
            "ca_not_after": self.ca.cert.not_valid_after_utc.isoformat(),
            "ca_trusted": self.fingerprints(),
            "server_serial": str(cert.serial_number),
            "server_not_after": cert.not_valid_after_utc.isoformat(),
            "server_renewals": self.renewals,
            "cert_ttl": self.cert_ttl,
            "join_token_generation": self.tokens.generation,
            "nodes": len(self._nodes),
            "rotation": rotation,
            "agents": self.agents(),
        }
