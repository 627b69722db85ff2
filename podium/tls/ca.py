"""The cluster CA: created on a server's first secure start (or brought by the operator),
and the certificates it signs.

Keys are ECDSA on P-256.  Why not Ed25519, which is smaller and faster to sign with: TLS
stacks accept P-256 certificates everywhere (OpenSSL, Go, browsers, curl built against
any library), while Ed25519 certificates are still refused by some (browsers, older
OpenSSL builds, several HSMs); P-256 handshakes cost about the same.  RSA-2048 would
cost ~10x the handshake CPU and 5x the bytes for no gain.

Every leaf certificate carries both the ``serverAuth`` and ``clientAuth`` usages: a
server answers agents and also calls agents' log endpoints; an agent calls servers and
also answers their log requests.  Its identity is spelled (see :mod:`podium.tls.identity`):

- Subject ``O=Podium, OU=<role>, CN=<node name or server name>``;
- an agent: the DNS name ``<node id>.node.podium`` (servers reach its endpoint by that
  name, so a certificate for one node cannot answer for another);
- a server: ``server.<region>.podium``, ``localhost``, and the addresses it serves on.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from podium.tls import TLSError
from podium.tls.files import PUBLIC_MODE, SECRET_MODE, private_dir, write_file

PrivateKey = ec.EllipticCurvePrivateKey

DEFAULT_CERT_TTL = 30 * 24 * 3600.0
"""Leaf certificates live 30 days by default (Swarm: 90); renewed at two thirds of that."""
CA_TTL = 10 * 365 * 24 * 3600.0
MIN_CERT_TTL = 5.0
"""Below this, a certificate would expire before a loaded machine had renewed it."""
RENEW_AT = 2 / 3
DEFAULT_REGION = "global"
NODE_DOMAIN = "node.podium"
ROLE_AGENT = "agent"
ROLE_SERVER = "server"
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes, where: str = "the key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TLSError(f"{where} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TLSError(f"{where} is a {type(key).__name__}; Podium uses EC (P-256) keys")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes, where: str = "the certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise TLSError(f"{where} is not a PEM certificate: {exc}") from exc


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lower-case base32 without padding (52 characters:
    no ``-``, so it stands in a join token as one field)."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()


def renew_time(cert: x509.Certificate) -> dt.datetime:
    """Two thirds into the certificate's life: when it is renewed."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * RENEW_AT


def make_csr(key: PrivateKey, name: str) -> bytes:
    """A certificate request for ``key``; the server decides what the certificate names."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name or "podium")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes | str) -> x509.CertificateSigningRequest:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise TLSError(f"csr is not a PEM certificate signing request: {exc}") from exc
    if not csr.is_signature_valid:
        raise TLSError("csr: its signature does not match its key")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise TLSError("csr: the key must be EC P-256")
    return csr


def _backdate(ttl: float) -> dt.timedelta:
    """Clocks of two machines differ a little: a certificate is valid from a bit before now
    (a tenth of its life, at most five minutes)."""
    return dt.timedelta(seconds=min(300.0, ttl / 10))


def _name(role: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Podium"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or role),
        ]
    )


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip().strip("[]")
        if not name or name in seen or name in ("0.0.0.0", "::"):
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


@dataclass(frozen=True)
class Issued:
    """A signed certificate, PEM, with what its holder needs to know of it."""

    cert_pem: bytes
    serial: int
    not_after: dt.datetime

    @property
    def cert(self) -> x509.Certificate:
        return load_cert(self.cert_pem)


def node_dns_name(node_id: str) -> str:
    return f"{node_id}.{NODE_DOMAIN}"


def server_dns_name(region: str = DEFAULT_REGION) -> str:
    return f"server.{region}.podium"


class CertificateAuthority:
    """The CA's certificate and key; signs leaf certificates.  The key never leaves the
    server's data dir: nothing here serialises it but :meth:`save`."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        self.cert = cert
        self.key = key
        self.cert_pem = cert_pem(cert)
        self.fingerprint = fingerprint(cert)

    # ------------------------------------------------------------------ making, loading
    @classmethod
    def create(cls, name: str = "Podium cluster CA", ttl: float = CA_TTL) -> CertificateAuthority:
        key = new_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Podium"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {secrets.token_hex(4)}"),
            ]
        )
        start = now() - dt.timedelta(minutes=5)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(seconds=ttl))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        """A CA from files (``--ca-cert/--ca-key``), checked: a CA certificate, in date,
        whose key is the one given."""
        try:
            cert_data = cert_path.read_bytes()
        except OSError as exc:
            raise TLSError(f"cannot read the CA certificate {cert_path}: {exc.strerror}") from exc
        try:
            key_data = key_path.read_bytes()
        except OSError as exc:
            raise TLSError(f"cannot read the CA key {key_path}: {exc.strerror}") from exc
        cert = load_cert(cert_data, f"the CA certificate {cert_path}")
        key = load_key(key_data, f"the CA key {key_path}")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise TLSError(f"{cert_path} is not a CA certificate (basicConstraints CA:TRUE)")
        if cert.public_key() != key.public_key():
            raise TLSError(f"the CA key {key_path} is not the key of {cert_path}")
        if cert.not_valid_after_utc <= now():
            raise TLSError(
                f"the CA certificate {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
            )
        return cls(cert, key)

    @classmethod
    def load_or_create(cls, directory: Path) -> tuple[CertificateAuthority, bool]:
        """The CA kept in ``directory`` (ca.crt 0644, ca.key 0600), made on first use.
        Answers it and whether it was just created."""
        cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
        if cert_path.exists() or key_path.exists():
            return cls.load(cert_path, key_path), False
        ca = cls.create()
        ca.save(directory)
        return ca, True

    def save(self, directory: Path) -> None:
        private_dir(directory)
        write_file(directory / CA_KEY_FILE, key_pem(self.key), SECRET_MODE)
        write_file(directory / CA_CERT_FILE, self.cert_pem, PUBLIC_MODE)

    # ------------------------------------------------------------------ signing
    def _leaf(
        self,
        public_key: ec.EllipticCurvePublicKey,
        subject: x509.Name,
        san: list[x509.GeneralName],
        ttl: float,
    ) -> Issued:
        if ttl < MIN_CERT_TTL:
            raise TLSError(f"a certificate lifetime must be at least {MIN_CERT_TTL:g}s")
        start = now() - _backdate(ttl)
        end = min(now() + dt.timedelta(seconds=ttl), self.cert.not_valid_after_utc)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert_pem(cert), serial, end)

    def issue_server(
        self,
        public_key: ec.EllipticCurvePublicKey,
        addresses: Iterable[str],
        ttl: float = DEFAULT_CERT_TTL,
        region: str = DEFAULT_REGION,
    ) -> Issued:
        """A server's certificate: its name, localhost and loopback, and ``addresses``."""
        names = [server_dns_name(region), "localhost", "127.0.0.1", "::1", *addresses]
        return self._leaf(public_key, _name(ROLE_SERVER, server_dns_name(region)), _san(names), ttl)

    def issue_agent(
        self, csr_pem: bytes | str, node_id: str, name: str, ttl: float = DEFAULT_CERT_TTL
    ) -> Issued:
        """An agent's certificate for the key in ``csr_pem`` (the agent keeps the private
        key).  What it names comes from the server, never from the CSR's subject."""
        csr = load_csr(csr_pem)
        public_key = csr.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)  # load_csr checked
        san: list[x509.GeneralName] = [x509.DNSName(node_dns_name(node_id))]
        return self._leaf(public_key, _name(ROLE_AGENT, name), san, ttl)

    def signed(self, cert: x509.Certificate) -> bool:
        """Whether this CA signed ``cert`` (its signature checks out with the CA's key)."""
        if cert.issuer != self.cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def random_secret(nbytes: int = 20) -> str:
    return base64.b32encode(os.urandom(nbytes)).decode().rstrip("=").lower()
