"""The CA rotation's phases, without sockets: what moves it on, what holds it up, and a
server restarted in the middle of it."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from podium.tls.agent import AgentTLS
from podium.tls.ca import CertificateAuthority, fingerprint, node_dns_name
from podium.tls.files import mode_of
from podium.tls.server import JoinRefused, ServerTLS, client_context, server_context
from podium.tls.trust import NEXT_KEY_FILE, ROTATION_FILE, split_bundle
from tests.tls.test_ca import handshake, joined


def reopen(server: ServerTLS) -> ServerTLS:
    return ServerTLS.open(server.directory, cert_ttl=3600)


def test_the_rotation_waits_for_each_agent_to_trust_then_to_use_the_new_ca(
    tmp_path: Path,
) -> None:
    server = ServerTLS.open(tmp_path / "srv", cert_ttl=3600)
    agent = joined(server, tmp_path)
    old = server.ca.fingerprint
    # the server's certificate from the old CA, to knock on the agent with afterwards
    old_cert, old_key = tmp_path / "old.crt", tmp_path / "old.key"
    shutil.copy(server.cert_path, old_cert)
    shutil.copy(server.key_path, old_key)
    old_pem = server.trust_pem
    swapped: list[ssl.SSLContext] = []
    agent.on_client_context.append(swapped.append)
    first_client = agent.client_context
    server.start_rotation()
    assert server.rotation is not None and server.rotation.phase == "trust"
    new = server.rotation.new
    assert server.ca.fingerprint == old  # the old CA still signs
    assert [fingerprint(c) for c in split_bundle((server.directory / "ca.crt").read_bytes())] == [
        old,
        new,
    ]
    assert mode_of(server.directory / NEXT_KEY_FILE) == 0o600

    # restarted in phase trust: the same state
    server = reopen(server)
    assert server.rotation is not None and server.rotation.phase == "trust"
    assert server.fingerprints() == [old, new]

    answer = server.agent_trust(agent.identity, agent.fingerprints())
    assert answer["renew"] is False and server.rotation.phase == "trust"  # not yet trusted
    assert agent.set_trust(answer["trusted"].encode())
    answer = server.agent_trust(agent.identity, agent.fingerprints())
    assert server.rotation is not None and server.rotation.phase == "reissue"
    assert server.ca.fingerprint == new and answer["renew"] is True
    assert not (server.directory / NEXT_KEY_FILE).exists()
    assert server.cert.issuer == server.ca.cert.subject

    # restarted in phase reissue
    server = reopen(server)
    assert server.rotation is not None and server.rotation.phase == "reissue"
    assert server.ca.fingerprint == new

    key, csr = AgentTLS.new_request("n1")
    issued = server.renew_agent(agent.identity, csr.decode())
    # issued, not yet used: the old CA stays trusted until the agent shows the new one
    assert server.rotation is not None and server.rotation.phase == "reissue"
    agent.install(key, issued.cert_pem)
    answer = server.agent_trust(agent.identity, agent.fingerprints())
    assert server.rotation is None and server.fingerprints() == [new]
    assert not (server.directory / ROTATION_FILE).exists()
    assert agent.set_trust(answer["trusted"].encode()) and agent.fingerprints() == [new]
    assert reopen(server).fingerprints() == [new]

    # the old CA is trusted no more by the agent: its connection pool got a new client
    # context, and its endpoint refuses a certificate the old CA issued
    assert swapped == [agent.client_context] and agent.client_context is not first_client
    old_server = server_context(old_pem, old_cert, old_key, require_client=False)
    with pytest.raises(ssl.SSLError):
        handshake(agent.client_context, old_server, "localhost")
    old_caller = client_context(old_pem, old_cert, old_key)
    with pytest.raises(ssl.SSLError):
        handshake(old_caller, agent.server_context, node_dns_name(agent.node_id))
    handshake(agent.client_context, server.server_context, "localhost")
    new_caller = client_context(server.trust_pem, server.cert_path, server.key_path)
    handshake(new_caller, agent.server_context, node_dns_name(agent.node_id))


def test_finish_drops_the_old_ca_whoever_has_not_moved(tmp_path: Path) -> None:
    server = ServerTLS.open(tmp_path / "srv", cert_ttl=3600)
    joined(server, tmp_path)
    server.start_rotation()
    with pytest.raises(JoinRefused, match="already in progress"):
        server.start_rotation()
    assert server.rotation is not None and server.rotation.phase == "trust"
    server.finish_rotation()
    assert server.rotation is None and len(server.fingerprints()) == 1
    with pytest.raises(JoinRefused, match="no CA rotation"):
        server.finish_rotation()


def test_without_agents_the_rotation_completes_at_once(tmp_path: Path) -> None:
    server = ServerTLS.open(tmp_path / "srv", cert_ttl=3600)
    old = server.ca.fingerprint
    server.start_rotation()
    assert server.rotation is None and server.fingerprints() != [old]


def test_a_brought_ca_is_not_rotated_by_the_server(tmp_path: Path) -> None:
    CertificateAuthority.create().save(tmp_path / "ca")
    server = ServerTLS.open(
        tmp_path / "srv", ca_cert=tmp_path / "ca" / "ca.crt", ca_key=tmp_path / "ca" / "ca.key"
    )
    with pytest.raises(JoinRefused, match="--ca-cert/--ca-key"):
        server.start_rotation()
    assert not (server.directory / ROTATION_FILE).exists()
