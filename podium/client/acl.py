"""The ``/v1/acl`` calls as :class:`~podium.client.endpoints.Endpoint` values.

Send them with ``client.query(...)`` (either client)::

    token = client.query(acl.create_token("ci", ["team-a"], ttl="24h")).value
    print(token.secret_id)   # shown once
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from podium.client.endpoints import Endpoint
from podium.models.acl import ACLPolicy, ACLToken, NewToken, TokenType

_POLICIES: Callable[[Any], list[ACLPolicy]] = TypeAdapter(list[ACLPolicy]).validate_python
_TOKENS: Callable[[Any], list[ACLToken]] = TypeAdapter(list[ACLToken]).validate_python


def _seg(value: str) -> str:
    if not value:
        raise ValueError("a name (or accessor) cannot be empty")
    return quote(value, safe="")


def _index(body: Any) -> int:
    return int(body["index"])


def bootstrap() -> Endpoint[NewToken]:
    return Endpoint("POST", "/v1/acl/bootstrap", NewToken.model_validate)


def policies() -> Endpoint[list[ACLPolicy]]:
    return Endpoint("GET", "/v1/acl/policies", _POLICIES)


def policy(name: str) -> Endpoint[ACLPolicy]:
    return Endpoint("GET", f"/v1/acl/policy/{_seg(name)}", ACLPolicy.model_validate)


def put_policy(name: str, rules: str, description: str = "") -> Endpoint[ACLPolicy]:
    body = {"rules": rules, "description": description}
    return Endpoint("PUT", f"/v1/acl/policy/{_seg(name)}", ACLPolicy.model_validate, body=body)


def delete_policy(name: str) -> Endpoint[int]:
    return Endpoint("DELETE", f"/v1/acl/policy/{_seg(name)}", _index)


def create_token(
    name: str,
    policies: list[str],
    type: TokenType = TokenType.CLIENT,
    ttl: str | float | None = None,
) -> Endpoint[NewToken]:
    body = {"name": name, "type": type.value, "policies": policies, "ttl": ttl}
    return Endpoint("POST", "/v1/acl/token", NewToken.model_validate, body=body)


def tokens() -> Endpoint[list[ACLToken]]:
    return Endpoint("GET", "/v1/acl/tokens", _TOKENS)


def token(accessor: str) -> Endpoint[ACLToken]:
    return Endpoint("GET", f"/v1/acl/token/{_seg(accessor)}", ACLToken.model_validate)


def token_self() -> Endpoint[ACLToken]:
    return Endpoint("GET", "/v1/acl/token/self", ACLToken.model_validate)


def delete_token(accessor: str) -> Endpoint[int]:
    return Endpoint("DELETE", f"/v1/acl/token/{_seg(accessor)}", _index)
