"""The API's exception handlers: every refusal in one shape, ``{"error": message, ...}``,
with the status the error means (docs/api.md).  ``create_app`` installs them on the app;
the routers raise the domain's errors (podium.errors) and never build error answers
themselves, but for a few that carry more (a revert's known versions)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from podium.errors import AmbiguousPrefix, Conflict, Forbidden, NotFound, SpecError
from podium.server.keyring import KeyringError
from podium.server.routes.common import error_answer
from podium.state.errors import StoreError, StoreFull


async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
    return error_answer(404, str(exc))


async def _ambiguous(_: Request, exc: AmbiguousPrefix) -> JSONResponse:
    text = str(exc)
    matches = text.split(": ", 1)[1].rstrip("…").split(", ") if ": " in text else []
    return error_answer(400, text, matches=matches)


async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
    return error_answer(409, str(exc))


async def _spec(_: Request, exc: SpecError) -> JSONResponse:
    return error_answer(
        400,
        "invalid job specification: "
        + "; ".join(
            f"{i.path}: {i.message}" + (f" ({i.hint})" if i.hint else "") for i in exc.issues
        ),
        issues=[i.as_dict() for i in exc.issues],
    )


async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
    return error_answer(403, str(exc))


async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
    # 507 Insufficient Storage for a full disk, 503 for any other store failure;
    # nothing was changed (the store applies a write only once it is durable), unless
    # the store could not learn the outcome (etcd did not answer in time: the proposal
    # may still be applied, and is then found in the log, never half)
    if getattr(exc, "outcome_unknown", False):
        what = "the server could not confirm this change (it may still take effect)"
    else:
        what = "the server could not store this change, so nothing changed"
    return error_answer(
        507 if isinstance(exc, StoreFull) else 503, f"{what}: {exc}", cause=exc.cause
    )


async def _keyring(_: Request, exc: KeyringError) -> JSONResponse:
    return error_answer(500, str(exc))


async def _value(_: Request, exc: ValueError) -> JSONResponse:
    return error_answer(400, str(exc))


async def _http(_: Request, exc: HTTPException) -> JSONResponse:
    """FastAPI's and Starlette's own refusals (a body that is not JSON, an unknown
    route, a method it lacks) in the API's one error shape, not ``{"detail"}``."""
    message = str(exc.detail)
    if exc.status_code == 400:
        message = f"invalid request body: {message} (it must be JSON, in UTF-8)"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return error_answer(400, "invalid request: " + "; ".join(parts))


def install(app: FastAPI) -> None:
    """The handlers above, each for its error (Starlette picks the nearest class in the
    exception's MRO, so ``SpecError`` is answered as a spec error, not a ``ValueError``)."""
    app.add_exception_handler(NotFound, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(AmbiguousPrefix, _ambiguous)  # type: ignore[arg-type]
    app.add_exception_handler(Conflict, _conflict)  # type: ignore[arg-type]
    app.add_exception_handler(SpecError, _spec)  # type: ignore[arg-type]
    app.add_exception_handler(Forbidden, _forbidden)  # type: ignore[arg-type]
    app.add_exception_handler(StoreError, _store_error)  # type: ignore[arg-type]
    app.add_exception_handler(KeyringError, _keyring)  # type: ignore[arg-type]
    app.add_exception_handler(ValueError, _value)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
