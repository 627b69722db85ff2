"""Trust bundles and the CA rotation's state.

Why a bundle: a CA is replaced without a restart and without a failed call only if, for a
while, every process trusts both the old CA and the new one (Docker Swarm's scheme).  A
bundle is PEM certificates one after another, the CA that signs first; ``ca.crt`` of a
server and of an agent holds the bundle, so a restarted process trusts what the running
one did.

The rotation (``podium tls rotate-ca``) moves through three phases, kept in
``rotation.json`` beside the CA:

``trust``
    a new CA is made (``ca-next.crt``/``ca-next.key``) and trusted beside the old one;
    the old one still signs.  Agents fetch the bundle (``POST /v1/agent/trust``) and say
    which CAs they trust.
``reissue``
    every agent trusts the new CA: it signs from now on (``ca.key`` is replaced; the old
    key is deleted), the server's own certificate is re-issued under it, and each agent is
    told to renew at once.
``done`` (no ``rotation.json``)
    every agent holds a certificate from the new CA: the old one is dropped from every
    trust store; a certificate it issued is refused at the handshake.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from podium.tls import TLSError
from podium.tls.ca import fingerprint

PHASE_TRUST = "trust"
PHASE_REISSUE = "reissue"
PHASES = (PHASE_TRUST, PHASE_REISSUE)
ROTATION_FILE = "rotation.json"
NEXT_CERT_FILE = "ca-next.crt"
NEXT_KEY_FILE = "ca-next.key"


def split_bundle(pem: bytes, where: str = "the CA bundle") -> list[x509.Certificate]:
    """The certificates of a PEM bundle, in order (at least one)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TLSError(f"{where} is not PEM certificates: {exc}") from exc
    if not certs:
        raise TLSError(f"{where} holds no certificate")
    return certs


def bundle_pem(certs: list[x509.Certificate]) -> bytes:
    """``certs`` as one PEM bundle, each certificate once, in the order given."""
    from podium.tls.ca import cert_pem

    out: list[bytes] = []
    seen: set[str] = set()
    for cert in certs:
        fp = fingerprint(cert)
        if fp not in seen:
            seen.add(fp)
            out.append(cert_pem(cert))
    return b"".join(out)


def fingerprints(certs: list[x509.Certificate]) -> list[str]:
    return [fingerprint(c) for c in certs]


def issuer_of(cert: x509.Certificate, cas: list[x509.Certificate]) -> x509.Certificate | None:
    """The CA of ``cas`` that signed ``cert`` (its signature checked), or None."""
    for ca in cas:
        if cert.issuer != ca.subject:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return ca
    return None


@dataclass
class Rotation:
    """A CA rotation in progress (``rotation.json``)."""

    phase: str
    old: str
    """The old CA's fingerprint."""
    new: str
    """The new CA's fingerprint."""
    started: str
    switched: str = ""
    """When the new CA began to sign (the ``reissue`` phase)."""

    @classmethod
    def load(cls, directory: Path) -> Rotation | None:
        path = directory / ROTATION_FILE
        if not path.exists():
            return None
        try:
            rotation = cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise TLSError(f"{path} is damaged ({exc})") from exc
        if rotation.phase not in PHASES:
            raise TLSError(f"{path}: unknown phase {rotation.phase!r}")
        return rotation

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()


def utcnow_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


__all__ = [
    "NEXT_CERT_FILE",
    "NEXT_KEY_FILE",
    "PHASE_REISSUE",
    "PHASE_TRUST",
    "ROTATION_FILE",
    "Rotation",
    "bundle_pem",
    "fingerprints",
    "issuer_of",
    "split_bundle",
]
