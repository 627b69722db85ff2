"""The CA, certificates, join tokens and the certificate guard, without sockets (TLS
handshakes in memory, through ssl.MemoryBIO)."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from podium.tls import TLSError
from podium.tls.agent import AgentTLS
from podium.tls.asgi import RequireCertificate, agent_route
from podium.tls.ca import (
    CertificateAuthority,
    key_pem,
    load_cert,
    make_csr,
    new_key,
    node_dns_name,
    renew_time,
)
from podium.tls.identity import IDENTITY_KEY, identity_of
from podium.tls.server import JoinRefused, ServerTLS
from podium.tls.token import JoinTokens, parse_token


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """One TLS handshake in memory; answers the server's side (its peer certificate)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_side=False, server_hostname=hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(20):
        for i, (obj, out, peer_in) in enumerate(((c, c_out, s_in), (s, s_out, c_in))):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            data = out.read()
            if data:
                peer_in.write(data)
        if all(done):
            return s
    raise AssertionError("handshake did not finish")


@pytest.fixture
def server(tmp_path: Path) -> ServerTLS:
    return ServerTLS.open(tmp_path / "srv", cert_ttl=3600, addresses=["10.1.2.3", "db.example"])


def joined(server: ServerTLS, tmp_path: Path, node_id: str = "node-1") -> AgentTLS:
    key = new_key()
    secret = parse_token(str(server.join_token())).secret
    issued = server.join(secret, make_csr(key, "n1").decode(), node_id, "n1")
    AgentTLS.store(tmp_path / node_id, key, issued.cert_pem, server.ca.cert_pem)
    return AgentTLS(tmp_path / node_id)


def test_the_ca_is_kept_with_its_key_0600_and_loaded_again(tmp_path: Path) -> None:
    ca, created = CertificateAuthority.load_or_create(tmp_path / "tls")
    assert created
    assert mode(tmp_path / "tls" / "ca.key") == 0o600
    assert mode(tmp_path / "tls") == 0o700
    again, created = CertificateAuthority.load_or_create(tmp_path / "tls")
    assert not created and again.fingerprint == ca.fingerprint
    assert len(ca.fingerprint) == 52 and "-" not in ca.fingerprint


def test_a_brought_ca_is_checked(tmp_path: Path) -> None:
    a, b = CertificateAuthority.create(), CertificateAuthority.create()
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    with pytest.raises(TLSError, match="is not the key of"):
        CertificateAuthority.load(tmp_path / "a" / "ca.crt", tmp_path / "b" / "ca.key")
    with pytest.raises(TLSError, match="cannot read the CA key"):
        CertificateAuthority.load(tmp_path / "a" / "ca.crt", tmp_path / "none.key")
    (tmp_path / "junk.crt").write_text("hello")
    with pytest.raises(TLSError, match="is not a PEM certificate"):
        CertificateAuthority.load(tmp_path / "junk.crt", tmp_path / "a" / "ca.key")
    # a leaf is not a CA
    srv = ServerTLS.open(
        tmp_path / "s", ca_cert=tmp_path / "a" / "ca.crt", ca_key=tmp_path / "a" / "ca.key"
    )
    assert srv.ca.fingerprint == a.fingerprint
    assert not (tmp_path / "s" / "ca.key").exists()  # the brought key is not copied
    with pytest.raises(TLSError, match="is not a CA certificate"):
        CertificateAuthority.load(srv.cert_path, srv.key_path)
    with pytest.raises(TLSError, match="both --ca-cert and --ca-key"):
        ServerTLS.open(tmp_path / "t", ca_cert=tmp_path / "a" / "ca.crt")


def test_the_server_certificate_names_its_addresses(server: ServerTLS) -> None:
    san = server.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    assert {"server.global.podium", "localhost", "db.example"} <= set(dns)
    assert {"127.0.0.1", "::1", "10.1.2.3"} <= set(ips)
    assert mode(server.key_path) == 0o600
    ident = identity_of(server.cert)
    assert ident is not None and ident.role == "server" and ident.node_id is None


def test_a_join_gives_an_agent_certificate_for_its_own_key(
    server: ServerTLS, tmp_path: Path
) -> None:
    agent = joined(server, tmp_path)
    assert agent.identity.role == "agent" and agent.identity.node_id == "node-1"
    assert agent.identity.name == "n1"
    for f in ("agent.key", "agent.crt", "ca.crt"):
        assert mode(tmp_path / "node-1" / f) == 0o600
    life = agent.not_after - agent.cert.not_valid_before_utc
    assert dt.timedelta(seconds=3600) <= life <= dt.timedelta(seconds=3600 * 1.11)
    assert server.ca.signed(agent.cert)
    assert server.nodes()["node-1"]["name"] == "n1"
    # default lifetime: 30 days
    assert ServerTLS.open(tmp_path / "d").cert_ttl == 30 * 24 * 3600


def test_mutual_tls_between_server_and_agent_in_memory(server: ServerTLS, tmp_path: Path) -> None:
    agent = joined(server, tmp_path)
    # the agent verifies the server by address; the server sees who the agent is
    s = handshake(agent.client_context, server.server_context, "127.0.0.1")
    der = s.getpeercert(binary_form=True)
    assert der is not None
    ident = identity_of(x509.load_der_x509_certificate(der))
    assert ident is not None and ident.node_id == "node-1"
    # the server reaches the agent's endpoint as that node, and no other
    handshake(server.client_context, agent.server_context, node_dns_name("node-1"))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server.client_context, agent.server_context, node_dns_name("node-2"))
    # the agent's endpoint requires a certificate: a client without one is refused
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.load_verify_locations(cadata=server.ca.cert_pem.decode())
    with pytest.raises(ssl.SSLError):
        handshake(bare, agent.server_context, node_dns_name("node-1"))


def test_a_certificate_of_another_ca_fails_the_handshake(server: ServerTLS, tmp_path: Path) -> None:
    other = ServerTLS.open(tmp_path / "other")
    stranger = joined(other, tmp_path, "node-9")
    with pytest.raises(ssl.SSLError):
        handshake(stranger.client_context, server.server_context, "127.0.0.1")


def test_join_refusals_change_nothing(server: ServerTLS, tmp_path: Path) -> None:
    token = parse_token(str(server.join_token()))
    csr = make_csr(new_key(), "x").decode()
    with pytest.raises(JoinRefused, match="not this cluster's current one") as bad:
        server.join("a" * 32, csr, "node-2", "x")
    assert bad.value.status == 401
    with pytest.raises(JoinRefused, match="one DNS label"):
        server.join(token.secret, csr, "bad id/..", "x")
    with pytest.raises(JoinRefused, match="printable"):
        server.join(token.secret, csr, "node-2", "evil\x1b[2Jname")
    with pytest.raises(TLSError, match="csr"):
        server.join(token.secret, "not a csr", "node-2", "x")
    assert server.nodes() == {}
    joined(server, tmp_path, "node-1")
    with pytest.raises(JoinRefused, match="holds a certificate") as taken:
        server.join(token.secret, csr, "node-1", "x")
    assert taken.value.status == 409


def test_a_rotated_token_refuses_new_joins(server: ServerTLS, tmp_path: Path) -> None:
    old = server.join_token()
    new = server.rotate_join_token()
    assert old.secret != new.secret and old.fingerprint == new.fingerprint
    with pytest.raises(JoinRefused):
        server.join(old.secret, make_csr(new_key(), "x").decode(), "node-3", "x")
    # a restarted server keeps the rotation, and derives the same current token
    again = JoinTokens(server.directory)
    assert again.current(server.ca.fingerprint) == new
    stored = (server.directory / "join.json").read_text()
    assert new.secret not in stored and old.secret not in stored  # only a hash


def test_token_parsing() -> None:
    fp = "a" * 52
    assert parse_token(f"PDM-1-{fp}-{'b' * 32}").fingerprint == fp
    assert parse_token(f"  pdm-1-{fp.upper()}-{'B' * 32}\n").secret == "b" * 32
    for bad in ("", "PDM-1-abc-def", f"PDM-1-{fp}", f"XYZ-1-{fp}-{'b' * 32}", f"PDM-1-{fp}-short"):
        with pytest.raises(TLSError, match="not one `podium join-token agent` printed"):
            parse_token(bad)
    with pytest.raises(TLSError, match="version 2"):
        parse_token(f"PDM-2-{fp}-{'b' * 32}")


def test_renewal_keeps_the_identity_and_loads_into_the_live_context(
    server: ServerTLS, tmp_path: Path
) -> None:
    agent = joined(server, tmp_path)
    ctx, first = agent.client_context, agent.cert.serial_number
    key, csr = AgentTLS.new_request("ignored")
    agent.install(key, server.renew_agent(agent.identity, csr.decode()).cert_pem)
    assert agent.client_context is ctx and agent.cert.serial_number != first
    assert agent.identity.node_id == "node-1" and agent.identity.name == "n1"
    assert agent.renewals == 1
    # a certificate for another key, or of another CA, is not installed
    other_key, csr = AgentTLS.new_request("n1")
    issued = server.renew_agent(agent.identity, csr.decode())
    with pytest.raises(TLSError, match="not for the key"):
        agent.install(key, issued.cert_pem)
    stranger = ServerTLS.open(tmp_path / "other")
    forged = stranger.ca.issue_agent(csr, "node-1", "n1")
    with pytest.raises(TLSError, match="not signed by the cluster CA"):
        agent.install(other_key, forged.cert_pem)
    # the server's own certificate, likewise into its live contexts
    before = server.cert.serial_number
    server.renew_own()
    assert server.cert.serial_number != before and server.renewals == 1
    handshake(agent.client_context, server.server_context, "127.0.0.1")


def test_renewal_is_due_at_two_thirds_of_the_life(server: ServerTLS) -> None:
    cert = server.cert
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert renew_time(cert) - cert.not_valid_before_utc == life * 2 / 3
    assert 0 < server.seconds_to_renewal() < life.total_seconds()


def test_an_expired_certificate_is_not_reused(server: ServerTLS, tmp_path: Path) -> None:
    key = new_key()
    issued = server.ca.issue_agent(make_csr(key, "n"), "node-4", "n", ttl=5)
    cert = load_cert(issued.cert_pem)
    assert cert.not_valid_after_utc > cert.not_valid_before_utc
    # write a certificate whose end lies in the past, as a long-stopped agent would find
    from cryptography.hazmat.primitives import hashes

    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    old = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(past - dt.timedelta(days=2))
        .not_valid_after(past)
        .add_extension(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, False
        )
        .sign(server.ca.key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    AgentTLS.store(
        tmp_path / "old", key, old.public_bytes(serialization.Encoding.PEM), server.ca.cert_pem
    )
    with pytest.raises(TLSError, match=r"expired .* join again with --join-token"):
        AgentTLS(tmp_path / "old")
    assert key_pem(key)  # the key stays where it was


async def _call(guard: RequireCertificate, path: str, identity: Any) -> tuple[int, dict[str, Any]]:
    import json

    scope: dict[str, Any] = {"type": "http", "path": path}
    if identity is not None:
        scope["extensions"] = {"tls": {IDENTITY_KEY: identity}}
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        sent.append({"type": "http.response.start", "status": 200})
        sent.append({"type": "http.response.body", "body": b"{}"})

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {}

    await guard(scope, receive, send)
    return int(sent[0]["status"]), json.loads(sent[1]["body"])


async def test_the_guard_requires_the_right_certificate(server: ServerTLS, tmp_path: Path) -> None:
    agent = joined(server, tmp_path).identity
    srv = identity_of(server.cert)

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = RequireCertificate(ok)
    sync = "/v1/client/node/node-1/allocations"
    assert (await _call(guard, sync, agent))[0] == 200
    status, body = await _call(guard, sync, None)
    assert status == 401 and "--join-token" in body["error"]
    status, body = await _call(guard, sync, srv)
    assert status == 403 and "for a cluster agent" in body["error"]
    status, body = await _call(guard, "/v1/node/node-2/heartbeat", agent)
    assert status == 403 and "cannot act for node node-2" in body["error"]
    assert (await _call(guard, "/v1/node/register", agent))[0] == 200
    assert (await _call(guard, "/v1/jobs", None))[0] == 200  # people's routes: not this guard's
    assert agent_route("/v1/client/allocations") and not agent_route("/v1/node/x/drain")
