"""Who a verified peer certificate names: its role, node id and name.

The TLS layer has already checked that the certificate chains to the cluster CA (the
handshake fails otherwise); this reads what the CA wrote into it (see
:mod:`podium.tls.ca`), once per connection.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from podium.tls.ca import NODE_DOMAIN, ROLE_AGENT, ROLE_SERVER, now

TLS_EXTENSION = "tls"
"""``scope["extensions"]["tls"]``: the ASGI TLS extension (``client_cert_chain``: PEM
strings, ``client_cert_name``, ``tls_version``, ...), plus ``podium_identity``."""
IDENTITY_KEY = "podium_identity"


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    role: str
    """``agent`` or ``server``."""
    name: str
    node_id: str | None
    """An agent's node id (from its ``<id>.node.podium`` name); None for a server."""
    serial: int
    not_after: dt.datetime
    issuer: str = ""
    """The issuing CA's subject (RFC 4514): which CA of a trust bundle signed it (each
    Podium CA's name carries a random suffix)."""

    @property
    def expired(self) -> bool:
        return self.not_after <= now()


def _attr(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def identity_of(cert: x509.Certificate) -> PeerIdentity | None:
    """The identity ``cert`` carries, or None when it is not a Podium leaf certificate."""
    role = _attr(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if role not in (ROLE_AGENT, ROLE_SERVER):
        return None
    node_id = None
    if role == ROLE_AGENT:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None
        suffix = "." + NODE_DOMAIN
        ids = [
            n[: -len(suffix)] for n in san.get_values_for_type(x509.DNSName) if n.endswith(suffix)
        ]
        if len(ids) != 1:
            return None
        node_id = ids[0]
    return PeerIdentity(
        role=role,
        name=_attr(cert, NameOID.COMMON_NAME),
        node_id=node_id,
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
        issuer=cert.issuer.rfc4514_string(),
    )


def identity_of_der(der: bytes) -> PeerIdentity | None:
    try:
        return identity_of(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


def peer_identity(scope: Mapping[str, Any]) -> PeerIdentity | None:
    """The verified client certificate's identity on this request's connection, or None
    (plain HTTP, or no certificate presented)."""
    tls = (scope.get("extensions") or {}).get(TLS_EXTENSION)
    if not tls:
        return None
    identity = tls.get(IDENTITY_KEY)
    return identity if isinstance(identity, PeerIdentity) else None
