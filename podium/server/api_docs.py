"""What the OpenAPI document says of the routes: error statuses, the blocking-query
parameters and the job body's schema.

The routes' declarations (the routers of podium/server/routes and those beside them) use
these so the served document (``/v1/openapi.json``) is complete and true: every status a
route answers, with the one error shape (:class:`podium.models.api.ErrorBody`), and
``index``/``wait`` typed and checked the same way on every route.  The fuzz test
(tests/server/test_fuzz_api.py) holds a real server to it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query
from pydantic import AfterValidator, BaseModel, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs

from podium.models import parse_duration
from podium.models.api import ErrorBody

MAX_INDEX = 2**63 - 1

_DESCRIPTIONS = {
    400: "Invalid input: the message says what and where (an ambiguous id prefix adds "
    "`matches`; a job file or ACL policy, `issues`).",
    401: "No valid ACL token (ACLs on), or an agent's route without the node's secret.",
    403: "The token lacks what the route needs (`missing` says what), or a node speaks "
    "for another.",
    404: "No such id, id prefix, name, namespace or node.",
    409: "A conditional write lost (check index, cas, version, report order), a quota, "
    "or a state that refuses it.",
    408: "The request did not arrive in full within the server's `--request-read-timeout`.",
    413: "The request body is larger than the server takes (`--max-request-body`).",
    421: "The `Host` header names none of the server's names or addresses (ACLs off: "
    "against DNS rebinding; `--allowed-hosts` adds names).",
    429: "Too many at once (`--max-log-streams`); `Retry-After` says when to try again.",
    500: "The server could not do it (its message says why; e.g. the keyring).",
    502: "The node's agent could not be reached.",
    503: "The store could not make the write (nothing changed; `cause` says why).",
    507: "The store's disk is full (nothing changed; `cause` says why).",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for these statuses, each answered with :class:`ErrorBody`."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


COMMON = errors(400, 401, 403, 408, 421)
"""Every route: invalid query or body; refused at the access-control edge; refused at the
HTTP edge (podium.server.edge) for a request that never finished arriving or a foreign
``Host``."""
STORE_WRITE = errors(503, 507)
"""Every route that writes: the store failed safe (podium.state.errors)."""
TOO_MANY = errors(429)
NOT_FOUND = errors(404)
BODY = errors(413)
"""Every route that takes a body."""
CONFLICT = errors(409)


def _check_wait(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)  # raises ValueError with what is wrong (answered as 400)
    return value


DURATION_PATTERN = r"^\s*(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d))+)?\s*$"
"""What :func:`podium.models.parse_duration` takes as a string (``500ms``, ``1h30m``)."""

Index = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_INDEX,
        description="Blocking query: answer once the state behind this route is past this "
        "store index (from `X-Podium-Index`), or when `wait` runs out.",
    ),
]
Wait = Annotated[
    str | None,
    AfterValidator(_check_wait),
    Query(
        max_length=64,
        description="How long a blocking query (`index`) may wait: a duration such as "
        "`30s` or `1m30s`; default 5m, at most 10m (a longer one is cut to 10m).",
        json_schema_extra={"pattern": DURATION_PATTERN},
    ),
]
Since = Annotated[
    int | None,
    Query(ge=0, le=MAX_INDEX, description="Delta sync: only what changed past this index."),
]


class SchemaOf:
    """An annotation that gives a field the JSON schema of ``model`` (validation mode)
    while the handler keeps it as plain data: a job file is checked by the spec layer
    (podium.spec.validate_job_dict), whose errors name the file's fields and lines,
    not by FastAPI; the document still says exactly what it takes."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    def __get_pydantic_json_schema__(
        self, schema: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(self.model.__pydantic_core_schema__)


def _response(answer: dict[str, Any]) -> dict[str, Any]:
    """An error answer as the document writes it: ErrorBody by reference."""
    return {
        "description": answer["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


def install(app: FastAPI) -> None:
    """Serve the document without FastAPI's ``422`` answers: Podium answers an invalid
    query or body with ``400`` and :class:`ErrorBody` (the ``RequestValidationError``
    handler in podium/server/routes/errors.py), which :data:`COMMON` documents on every
    route."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = make()
            for ops in doc.get("paths", {}).values():
                for method, op in ops.items():
                    responses = op.setdefault("responses", {})
                    responses.pop("422", None)
                    if method in ("post", "put", "patch", "delete"):
                        # any write may meet a full or failing store (routes/errors.py)
                        for code, answer in STORE_WRITE.items():
                            responses.setdefault(str(code), _response(answer))
            schemas = doc.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


LOG_STREAM: dict[str, Any] = {
    "description": "The log's bytes, streamed (with `follow`, until the task ends).",
    "content": {"text/plain; charset=utf-8": {"schema": {"type": "string"}}},
}

EVENT_STREAM: dict[str, Any] = {
    "description": "Committed changes, one JSON object per line (an `Event`; `{}` is a "
    "heartbeat), without end; with `Accept: text/event-stream`, Server-Sent Events.",
    "content": {
        "application/x-ndjson": {"schema": {"type": "string"}},
        "text/event-stream": {"schema": {"type": "string"}},
    },
}
GONE: dict[int | str, dict[str, Any]] = {
    410: {
        "model": ErrorBody,
        "description": "The events after `index` are no longer held (`code`: "
        "`index_too_old`, `oldest_index`: the lowest index to resume from).",
    }
}
