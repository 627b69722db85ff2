"""TLS for the processes :mod:`podium.runtime` starts (``--secure``; docs/tls.md).

The glue between the pure certificate code (:mod:`podium.tls`) and the sockets:

- :class:`TLSProtocol`: uvicorn's h11 protocol, which also puts the connection's verified
  client certificate into each request's scope (the ASGI TLS extension,
  ``scope["extensions"]["tls"]``, with ``podium_identity``: see
  :func:`podium.tls.identity.peer_identity`);
- :func:`open_server_tls`: the server's CA, certificate (its addresses in the SAN) and
  join tokens;
- :func:`agent_tls`: an agent's certificate: the one it keeps, or one made in this process
  for an agent beside its server, or one obtained with a join token (the CA the server
  sends is checked against the token's fingerprint first);
- :func:`renew_server` / :func:`renew_agent`: loops that renew a certificate at two
  thirds of its life, into the live SSL contexts (no restart, no dropped connection);
  the server's also moves a CA rotation on;
- :func:`follow_trust`: an agent's long poll of the CAs to trust (``POST
  /v1/agent/trust``), which carries a CA rotation to it: the new CA trusted, its
  certificate renewed at once under it, the old CA dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from podium.tls import TLSError
from podium.tls.agent import AgentTLS
from podium.tls.ca import fingerprint, load_cert
from podium.tls.identity import IDENTITY_KEY, TLS_EXTENSION, identity_of_der
from podium.tls.server import ServerTLS
from podium.tls.token import parse_token

log = logging.getLogger("podium.tls")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

RETRY_MIN = 1.0
RETRY_MAX = 30.0


# ---------------------------------------------------------------------------- uvicorn
class _WithTLS:
    """The app, with this connection's TLS extension put into every request's scope."""

    __slots__ = ("app", "tls")

    def __init__(self, app: ASGIApp, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        extensions = scope.get("extensions")
        if extensions is None:
            scope["extensions"] = {TLS_EXTENSION: self.tls}
        else:
            extensions[TLS_EXTENSION] = self.tls
        await self.app(scope, receive, send)


def tls_extension(ssl_object: Any) -> dict[str, Any]:
    """The ASGI TLS extension of one connection (its peer certificate parsed once)."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    chain: list[str] = []
    name = None
    if der:
        cert = x509.load_der_x509_certificate(der)
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        name = cert.subject.rfc4514_string()
    cipher = ssl_object.cipher() if ssl_object is not None else None
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": ssl_object.version() if ssl_object is not None else None,
        "cipher_suite": cipher[0] if cipher else None,
        IDENTITY_KEY: identity_of_der(der) if der else None,
    }


class TLSProtocol(H11Protocol):
    """uvicorn's h11 protocol, with the TLS extension in each request's scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.app = _WithTLS(self.app, tls_extension(ssl_object))


class TLSWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (``alloc exec``), with the TLS extension in its scope
    too: the upgraded connection gets the app from the config, not from the HTTP
    protocol that held it, so without this a certificate guard would see none."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.app = _WithTLS(self.app, tls_extension(ssl_object))


def uvicorn_tls(context: ssl.SSLContext) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that serve over ``context`` (kept, not copied:
    a renewal loads into it)."""
    return {
        "http": TLSProtocol,
        "ws": TLSWebSocketProtocol,
        "ssl_context_factory": lambda _config, _default: context,
    }


# ---------------------------------------------------------------------------- server
def local_addresses() -> list[str]:
    """This machine's addresses, for a server that listens on all of them."""
    import psutil

    out: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                out.append(a.address.split("%")[0])
    return out


def san_addresses(host: str, extra: list[str]) -> list[str]:
    """What a server's certificate names: the address it binds (every local one for a
    wildcard), the host name, and ``extra`` (``--advertise`` and such)."""
    names = [*extra, socket.gethostname()]
    with contextlib.suppress(OSError):
        names.append(socket.getfqdn())
    names.extend(local_addresses() if host in ("0.0.0.0", "::", "") else [host])
    return names


def open_server_tls(
    data_dir: Path,
    host: str,
    *,
    ca_cert: str | None,
    ca_key: str | None,
    cert_ttl: float,
    extra_names: list[str],
) -> ServerTLS:
    tls = ServerTLS.open(
        data_dir / "server" / "tls",
        ca_cert=Path(ca_cert) if ca_cert else None,
        ca_key=Path(ca_key) if ca_key else None,
        cert_ttl=cert_ttl,
        addresses=san_addresses(host, extra_names),
    )
    if tls.ca_created:
        log.info("created the cluster CA in %s (fingerprint %s)", tls.directory, tls.ca.fingerprint)
    return tls


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _sleep_until_renewal(seconds: float) -> None:
    await asyncio.sleep(max(0.05, seconds))


ADVANCE_EVERY = 5.0
"""How often a server checks whether a CA rotation can move on without an agent's call
(an agent's certificate expired: it no longer holds the rotation up)."""


async def renew_server(tls: ServerTLS) -> None:
    """Renew this server's certificate at two thirds of its life, for ever; move a CA
    rotation on as agents' certificates expire."""
    while True:
        await _sleep_until_renewal(min(ADVANCE_EVERY, tls.seconds_to_renewal()))
        try:
            tls.advance()
        except (OSError, TLSError) as exc:
            log.error("cannot move the CA rotation on: %s", exc)
        if tls.seconds_to_renewal() > 0:
            continue
        try:
            issued = tls.renew_own()
        except (OSError, TLSError) as exc:
            log.error("cannot renew this server's certificate: %s; retrying", exc)
            await asyncio.sleep(RETRY_MIN)
            continue
        log.info(
            "renewed this server's certificate (serial %x, valid until %s)",
            issued.serial,
            issued.not_after.isoformat(timespec="seconds"),
        )


# ---------------------------------------------------------------------------- agent
def _https(servers: list[str]) -> list[str]:
    bad = [s for s in servers if not s.startswith("https://")]
    if bad:
        raise ValueError(
            f"a secure agent talks to servers over https://, not {bad[0]}; "
            "write --servers https://HOST:PORT"
        )
    return servers


async def join(
    servers: list[str], token_text: str, directory: Path, node_id: str, name: str
) -> AgentTLS:
    """Join with a token: fetch the CA, check it against the token's fingerprint, then
    (over a connection verified with that CA) trade the secret and a CSR for a certificate.
    The private key is made here and never sent."""
    token = parse_token(token_text)
    errors: list[str] = []
    for server in _https(servers):
        # The CA is fetched without verification: nothing is trusted until its fingerprint
        # matches the token's, and nothing secret is sent on this connection.
        insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        try:
            async with httpx.AsyncClient(verify=insecure, timeout=10) as http:
                answer = await http.get(f"{server}/v1/agent/ca")
            if answer.status_code != 200:
                errors.append(f"{server}: {answer.status_code} {answer.text[:200]}")
                continue
            ca_pem = str(answer.json()["ca"]).encode()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            errors.append(f"{server}: {exc or type(exc).__name__}")
            continue
        ca = load_cert(ca_pem, f"the CA {server} sent")
        got = fingerprint(ca)
        if got != token.fingerprint:
            raise TLSError(
                f"the CA of {server} is not the one the join token pins (token: "
                f"{token.fingerprint[:16]}…, server: {got[:16]}…): this is another cluster's "
                "server, or someone in between; refusing to join"
            )
        key, csr = AgentTLS.new_request(name)
        verified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        verified.load_verify_locations(cadata=ca_pem.decode())
        try:
            async with httpx.AsyncClient(verify=verified, timeout=30) as http:
                answer = await http.post(
                    f"{server}/v1/agent/join",
                    json={
                        "secret": token.secret,
                        "ca_fingerprint": token.fingerprint,
                        "csr": csr.decode(),
                        "node_id": node_id,
                        "name": name,
                    },
                )
        except httpx.HTTPError as exc:
            errors.append(f"{server}: {exc or type(exc).__name__}")
            continue
        if answer.status_code != 200:
            try:
                message = answer.json().get("error") or answer.text
            except ValueError:
                message = answer.text
            raise TLSError(f"{server} refused to let this agent join: {message}")
        cert_pem = str(answer.json()["cert"]).encode()
        # the CAs to trust (two during a rotation), sent over the connection verified with
        # the pinned one; the pinned one first
        bundle = str(answer.json().get("ca") or ca_pem.decode()).encode()
        AgentTLS.store(directory, key, cert_pem, bundle)
        log.info("joined the cluster through %s (CA %s…)", server, got[:16])
        return AgentTLS(directory)
    raise TLSError("cannot join: no server answered: " + "; ".join(errors))


async def agent_tls(
    directory: Path,
    servers: list[str],
    node_id: str,
    name: str,
    *,
    join_token: str | None,
    local: ServerTLS | None,
) -> AgentTLS:
    """This agent's certificate: kept from before, else issued by the server in this
    process (``--dev --secure``), else obtained with ``join_token``."""
    if AgentTLS.exists(directory):
        tls = AgentTLS(directory)
        if tls.node_id != node_id:
            raise TLSError(
                f"the certificate in {directory} is node {tls.node_id}'s, but this agent is "
                f"node {node_id}: remove {directory} and join again with --join-token"
            )
        return tls
    if local is not None:
        local.issue_local_agent(directory, node_id, name)
        return AgentTLS(directory)
    if not join_token:
        raise TLSError(
            "this agent has no certificate yet: join with --join-token PDM-1-… "
            "(`podium join-token agent` on a server prints the whole command)"
        )
    return await join(servers, join_token, directory, node_id, name)


async def renew_agent(
    tls: AgentTLS,
    servers: list[str],
    local: ServerTLS | None,
    now_event: asyncio.Event | None = None,
) -> None:
    """Renew the agent's certificate at two thirds of its life (or when ``now_event`` is
    set: a CA rotation asks for it): a new key and CSR, sent over a connection made with
    the current certificate; retried (with backoff) until it works."""
    delay = RETRY_MIN
    now_event = now_event or asyncio.Event()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(now_event.wait(), max(0.05, tls.seconds_to_renewal()))
        now_event.clear()
        name = tls.identity.name
        key, csr = AgentTLS.new_request(name)
        try:
            if local is not None:
                cert_pem, bundle = local.renew_agent(tls.identity, csr.decode()).cert_pem, None
            else:
                cert_pem, bundle = await _renew_remote(tls, servers, csr)
            if bundle is not None:
                tls.set_trust(bundle)
            elif local is not None:
                tls.set_trust(local.trust_pem)
            tls.install(key, cert_pem)
        except (OSError, TLSError, httpx.HTTPError, ValueError, KeyError) as exc:
            left = (tls.not_after - dt.datetime.now(dt.UTC)).total_seconds()
            log.warning(
                "cannot renew this agent's certificate (%s); it expires in %.0fs, retrying",
                exc,
                left,
            )
            await asyncio.sleep(min(delay, max(RETRY_MIN, left / 10)))
            delay = min(RETRY_MAX, delay * 2)
            now_event.set()
            continue
        delay = RETRY_MIN
        log.info(
            "renewed this agent's certificate (serial %x, CA %s…, valid until %s)",
            tls.cert.serial_number,
            _issuer_fp(tls)[:16],
            tls.not_after.isoformat(timespec="seconds"),
        )


def _issuer_fp(tls: AgentTLS) -> str:
    from podium.tls.trust import issuer_of

    ca = issuer_of(tls.cert, tls.trusted)
    return fingerprint(ca) if ca is not None else "?"


async def _renew_remote(
    tls: AgentTLS, servers: list[str], csr: bytes
) -> tuple[bytes, bytes | None]:
    last: Exception | None = None
    for server in servers:
        try:
            async with httpx.AsyncClient(verify=tls.client_context, timeout=30) as http:
                answer = await http.post(f"{server}/v1/agent/renew", json={"csr": csr.decode()})
        except httpx.HTTPError as exc:
            last = exc
            continue
        if answer.status_code != 200:
            raise TLSError(f"{server} refused the renewal: {answer.text[:300]}")
        body = answer.json()
        bundle = body.get("ca")
        return str(body["cert"]).encode(), (str(bundle).encode() if bundle else None)
    raise TLSError(f"no server answered: {last}")


TRUST_WAIT = 50.0
"""Seconds the server holds an agent's trust poll open when nothing changed (a long poll:
a rotation reaches every agent at once, for one request per agent per TRUST_WAIT)."""
TRUST_MIN_INTERVAL = 1.0


async def follow_trust(
    tls: AgentTLS, servers: list[str], local: ServerTLS | None, renew_now: asyncio.Event
) -> None:
    """Keep this agent's trusted CAs the server's, and renew at once when the server says
    its certificate is not from the signing CA (a rotation)."""
    delay = RETRY_MIN
    while True:
        started = asyncio.get_running_loop().time()
        answer: dict[str, Any] | None
        try:
            if local is not None:  # the server in this process: a call, once a second
                answer = local.agent_trust(tls.identity, tls.fingerprints())
            else:
                answer = await _trust_remote(tls, servers)
            if answer is None:  # a server without the route: nothing to follow
                return
            if tls.set_trust(str(answer["trusted"]).encode()):
                log.info("trusting the CAs %s", ", ".join(f[:16] + "…" for f in tls.fingerprints()))
                continue  # tell the server at once
            if answer.get("renew"):
                renew_now.set()
        except (OSError, TLSError, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot fetch the CAs to trust (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)
            continue
        delay = RETRY_MIN
        elapsed = asyncio.get_running_loop().time() - started
        if elapsed < TRUST_MIN_INTERVAL:
            await asyncio.sleep(TRUST_MIN_INTERVAL - elapsed)


async def _trust_remote(tls: AgentTLS, servers: list[str]) -> dict[str, Any] | None:
    last: Exception | None = None
    for server in servers:
        try:
            # a new connection each time: it presents the certificate this agent holds now
            async with httpx.AsyncClient(
                verify=tls.client_context, timeout=httpx.Timeout(30, read=TRUST_WAIT + 30)
            ) as http:
                answer = await http.post(
                    f"{server}/v1/agent/trust",
                    json={"trusts": tls.fingerprints(), "wait": TRUST_WAIT},
                )
        except httpx.HTTPError as exc:
            last = exc
            continue
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise TLSError(f"{server} refused: {answer.text[:300]}")
        body: dict[str, Any] = answer.json()
        return body
    raise TLSError(f"no server answered: {last}")


def agent_app_guard(app: ASGIApp) -> ASGIApp:
    """The agent's endpoint answers only the cluster's servers (their certificates)."""
    from podium.tls.asgi import RequireCertificate, every_route

    return RequireCertificate(app, role="server", paths=every_route)
