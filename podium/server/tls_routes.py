"""The API of a secure server's certificates (``--secure``; docs/tls.md):

- ``GET  /v1/agent/ca``: the CA certificate and its fingerprint (public: a joining agent
  checks it against its join token before it trusts anything);
- ``POST /v1/agent/join``: a join token's secret, a CSR, the node's id and name → the
  agent's certificate and the CA;
- ``POST /v1/agent/renew``: a CSR, over a connection with the agent's current certificate
  → a new one for the same node;
- ``POST /v1/agent/trust``: an agent's trusted CAs (fingerprints), over a connection with
  its certificate → the CAs to trust and whether to renew now (a long poll: held while
  nothing changed; it carries a CA rotation to the agent);
- ``GET  /v1/operator/tls``: the CA fingerprint, this server's certificate, the agents and
  which CA each one's certificate is from, a rotation in progress;
- ``POST /v1/operator/tls/rotate-ca`` (``?finish=true``: drop the old CA now): a new CA;
- ``GET  /v1/operator/join-token/agent`` (``POST …?rotate=true`` to rotate): the token and
  the command an agent runs.

:func:`install_tls` adds these and the guard that requires an agent certificate on the agent
routes (:class:`podium.tls.asgi.RequireCertificate`) to the API; ``create_app`` calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from podium.server.api_docs import errors
from podium.tls import TLSError
from podium.tls.asgi import RequireCertificate
from podium.tls.ca import Issued, node_dns_name
from podium.tls.identity import peer_identity
from podium.tls.server import JoinRefused, ServerTLS


class JoinRequest(BaseModel):
    secret: str = Field(max_length=256, description="The join token's secret (its last field).")
    csr: str = Field(max_length=16_384, description="PEM certificate signing request.")
    node_id: str = Field(max_length=64)
    name: str = Field(max_length=256)
    ca_fingerprint: str = Field(
        "", max_length=64, description="The CA fingerprint the join token pins."
    )


class RenewRequest(BaseModel):
    csr: str = Field(max_length=16_384)


class TrustRequest(BaseModel):
    trusts: list[str] = Field(
        max_length=16, description="Fingerprints of the CAs the agent trusts now."
    )
    wait: float = Field(
        0.0, ge=0, le=300, description="Seconds to hold the answer while nothing changes."
    )


class _Changes:
    """Wakes the agents' trust polls when the server's trust or rotation changes."""

    def __init__(self, tls: ServerTLS) -> None:
        self.event: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        tls.on_change.append(self.fire)

    def _fire(self) -> None:
        event, self.event = self.event, None
        if event is not None:
            event.set()

    def fire(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._fire)

    async def wait(self, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        if self.event is None:
            self.event = asyncio.Event()
        event = self.event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _issued(tls: ServerTLS, issued: Issued) -> dict[str, Any]:
    return {
        "cert": issued.cert_pem.decode(),
        "ca": tls.trust_pem.decode(),
        "serial": str(issued.serial),
        "not_after": issued.not_after.isoformat(),
    }


def router(tls: ServerTLS) -> APIRouter:
    r = APIRouter(tags=["tls"], responses=errors(404, 409, 413, 500))

    changes = _Changes(tls)

    @r.get("/v1/agent/ca")
    async def ca() -> dict[str, Any]:
        return {
            "ca": tls.ca.cert_pem.decode(),
            "fingerprint": tls.ca.fingerprint,
            "trusted": tls.trust_pem.decode(),
        }

    @r.post("/v1/agent/trust")
    async def trust(body: TrustRequest, request: Request) -> JSONResponse:
        identity = peer_identity(request.scope)
        if identity is None:
            return _error(401, "the trusted CAs are told to agents (a TLS client certificate)")
        try:
            answer = tls.agent_trust(identity, body.trusts)
            if (
                body.wait > 0
                and not answer["renew"]
                and set(body.trusts) == set(tls.fingerprints())
            ):
                await changes.wait(body.wait)
                answer = tls.agent_trust(identity, body.trusts)
        except JoinRefused as exc:
            return _error(exc.status, str(exc))
        return JSONResponse(answer)

    @r.post("/v1/agent/join")
    async def join(body: JoinRequest) -> JSONResponse:
        try:
            issued = tls.join(body.secret, body.csr, body.node_id, body.name, body.ca_fingerprint)
        except JoinRefused as exc:
            return _error(exc.status, str(exc))
        except TLSError as exc:
            return _error(400, str(exc))
        return JSONResponse(_issued(tls, issued))

    @r.post("/v1/agent/renew")
    async def renew(body: RenewRequest, request: Request) -> JSONResponse:
        identity = peer_identity(request.scope)
        if identity is None:
            return _error(
                401, "renewal needs the agent's current certificate (a TLS client certificate)"
            )
        try:
            issued = tls.renew_agent(identity, body.csr)
        except JoinRefused as exc:
            return _error(exc.status, str(exc))
        except TLSError as exc:
            return _error(400, str(exc))
        return JSONResponse(_issued(tls, issued))

    @r.get("/v1/operator/tls")
    async def describe(request: Request) -> JSONResponse:
        return JSONResponse(tls.describe())

    @r.post("/v1/operator/tls/rotate-ca")
    async def rotate_ca(request: Request, finish: bool = False) -> JSONResponse:
        # who may: operator: write (podium.server.acl.RULES)
        try:
            if finish:
                tls.finish_rotation()
            else:
                tls.start_rotation()
        except JoinRefused as exc:
            return _error(exc.status, str(exc))
        except (OSError, TLSError) as exc:
            return _error(500, f"cannot rotate the CA: {exc}")
        return JSONResponse(tls.describe())

    async def token_answer(request: Request, rotate: bool) -> JSONResponse:
        # who may: operator: write (podium.server.acl.RULES; --secure turns ACLs on)
        token = tls.rotate_join_token() if rotate else tls.join_token()
        servers = tls.advertise or "https://SERVER:7634"
        return JSONResponse(
            {
                "role": "agent",
                "token": str(token),
                "generation": tls.tokens.generation,
                "ca_fingerprint": tls.ca.fingerprint,
                "command": (
                    f"podium agent --data-dir /var/lib/podium --servers {servers} "
                    f"--join-token {token}"
                ),
            }
        )

    @r.get("/v1/operator/join-token/agent")
    async def join_token(request: Request) -> JSONResponse:
        return await token_answer(request, rotate=False)

    @r.post("/v1/operator/join-token/agent")
    async def rotate_join_token(request: Request, rotate: bool = False) -> JSONResponse:
        return await token_answer(request, rotate=rotate)

    return r


def agent_verify(tls: ServerTLS | None) -> ssl.SSLContext | bool:
    """What the server verifies an agent's endpoint with: the CA (and it presents its own
    certificate, which the agent requires) under TLS; else httpx's default."""
    return tls.client_context if tls is not None else True


def agent_extensions(tls: ServerTLS | None, node_id: str) -> dict[str, Any]:
    """The name the agent's certificate must carry (``<node id>.node.podium``): a node's
    endpoint is verified as that node, whatever address it registered."""
    return {"sni_hostname": node_dns_name(node_id)} if tls is not None else {}


def install_tls(app: FastAPI, tls: ServerTLS | None) -> None:
    """With TLS on: the routes above, and agent routes refused without an agent's
    certificate.  Without: nothing."""
    if tls is None:
        return
    app.include_router(router(tls))
    app.add_middleware(RequireCertificate)
