"""The ``/v1/acl`` routes: bootstrap, policies and tokens (docs/acl.md).

Who may call them is decided at the edge (:mod:`podium.server.acl`): bootstrap by
anyone (once), ``token/self`` by any token, the rest by a management token.  A
token's secret is in the answer of its creation only; lists and reads show the
accessor.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from podium.errors import NotFound, SpecError
from podium.models import parse_duration
from podium.models.acl import ACLPolicy, ACLToken, NewToken, TokenType
from podium.models.api import IndexAnswer
from podium.server import acl
from podium.server.api_docs import BODY, CONFLICT, NOT_FOUND
from podium.server.trust import InvalidToken, Trust


class PolicyRequest(BaseModel):
    rules: str
    """The policy file's YAML text."""
    description: str = ""


class TokenRequest(BaseModel):
    name: str = ""
    type: TokenType = TokenType.CLIENT
    policies: list[str] = Field(default_factory=list)
    ttl: str | float | None = None
    """How long the token is valid (``24h``); none: until deleted."""


def _json(value: BaseModel | list[Any] | dict[str, Any], status: int = 200) -> JSONResponse:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, list):
        data = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    else:
        data = value
    return JSONResponse(data, status_code=status)


def router(trust: Trust) -> APIRouter:
    r = APIRouter(prefix="/v1/acl", tags=["acl"], responses=NOT_FOUND)

    @r.post("/bootstrap", response_model=NewToken, responses=CONFLICT)
    async def bootstrap() -> JSONResponse:
        """The first management token; refused (409) once done."""
        return _json(trust.bootstrap())

    @r.get("/policies", response_model=list[ACLPolicy])
    async def list_policies() -> JSONResponse:
        return _json(trust.store.acl_policies())

    @r.get("/policy/{name}", response_model=ACLPolicy)
    async def get_policy(name: str) -> JSONResponse:
        return _json(trust.policy(name))

    @r.put("/policy/{name}", response_model=ACLPolicy, responses=BODY)
    async def put_policy(name: str, body: PolicyRequest) -> JSONResponse:
        """Create or replace; the rules are checked (400 with lines) before anything is stored."""
        try:
            return _json(trust.put_policy(name, body.rules, body.description))
        except SpecError as exc:
            return JSONResponse(
                {
                    "error": f"invalid ACL policy {name!r}: "
                    + "; ".join(i.render("rules") for i in exc.issues),
                    "issues": [i.as_dict() for i in exc.issues],
                },
                status_code=400,
            )

    @r.delete("/policy/{name}", response_model=IndexAnswer)
    async def delete_policy(name: str) -> JSONResponse:
        return _json({"index": trust.delete_policy(name)})

    @r.post("/token", response_model=NewToken, responses=BODY)
    async def create_token(body: TokenRequest) -> JSONResponse:
        ttl = parse_duration(body.ttl) if body.ttl is not None else None
        return _json(trust.create_token(body.name, body.type, body.policies, ttl))

    @r.get("/tokens", response_model=list[ACLToken])
    async def list_tokens() -> JSONResponse:
        return _json(trust.tokens())

    @r.get("/token/self", response_model=ACLToken)
    async def token_self(request: Request) -> JSONResponse:
        try:
            identity = trust.identify(acl.token_of(request.scope))
        except InvalidToken as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        if identity.token is None:
            raise NotFound("this request carries no ACL token (--token or PODIUM_TOKEN)")
        return _json(identity.token)

    @r.get("/token/{accessor}", response_model=ACLToken)
    async def get_token(accessor: str) -> JSONResponse:
        return _json(trust.token(accessor))

    @r.delete("/token/{accessor}", response_model=IndexAnswer)
    async def delete_token(accessor: str) -> JSONResponse:
        return _json({"index": trust.delete_token(accessor)})

    return r
