"""What the sync and async clients share: addresses, timeouts, answers, errors.

Everything here is pure (no sockets), so the two clients differ only in
whether they ``await``.
"""

from __future__ import annotations

import os
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from podium.client.endpoints import Endpoint, namespaced
from podium.client.results import QueryResult
from podium.errors import (
    AmbiguousPrefix,
    APIError,
    Conflict,
    NotFound,
    Overloaded,
    PodiumError,
    SpecError,
    SpecIssue,
)
from podium.models import format_duration, parse_duration

T = TypeVar("T")

DEFAULT_ADDRESS = "http://127.0.0.1:7634"
DEFAULT_TIMEOUT = 10.0
INDEX_HEADER = "X-Podium-Index"
DEFAULT_BLOCKING_WAIT = 300.0
"""What the server waits when a blocking query names no ``wait`` (docs/api.md)."""


class ServerUnreachable(PodiumError):
    """No answer came back: the server is not listening, or the connection failed.

    Distinct from :class:`~podium.errors.APIError` (the server answered, with
    an error) because the remedy differs: start the server, or check the address.
    """

    def __init__(self, message: str, address: str, kind: str = "lost") -> None:
        super().__init__(message)
        self.address = address
        self.kind = kind
        """``connect``: nothing answered the connection, so the request was never sent
        (another server may be asked at once); ``timeout`` or ``lost``: it may have been."""


def resolve_address(address: str | None) -> str:
    """The server's base URL: the argument, else ``$PODIUM_ADDR``, else the local default.

    ``host:port`` without a scheme means plain HTTP, as people type it.
    """
    addr = (address or os.environ.get("PODIUM_ADDR") or DEFAULT_ADDRESS).strip()
    if "://" not in addr:
        addr = "http://" + addr
    return addr.rstrip("/")


TOKEN_HEADER = "X-Podium-Token"


def resolve_token(token: str | None) -> str | None:
    """The ACL token to send: the argument, else ``$PODIUM_TOKEN``, else none.  A token
    with a space or a control character inside (two lines pasted together) is refused
    here, with what to do, rather than sent as a header no server can read."""
    from_env = token is None
    value = os.environ.get("PODIUM_TOKEN") if from_env else token
    value = (value or "").strip()
    if any(c.isspace() or not c.isprintable() for c in value):
        where = "PODIUM_TOKEN" if from_env else "the token (--token)"
        raise PodiumError(
            f"{where} holds a space or a line break: give the Secret ID alone "
            "(podium acl bootstrap and podium acl token create print it as 'Secret ID = ...')"
        )
    return value or None


def auth_headers(token: str | None) -> dict[str, str]:
    found = resolve_token(token)
    return {TOKEN_HEADER: found} if found else {}


CACERT_ENV = "PODIUM_CACERT"
"""The CA file an https address is verified with (``--ca-cert``); without it, the system's."""


def tls_context(address: str, ca_cert: str | None = None) -> ssl.SSLContext | bool:
    """What the HTTP client verifies servers with: for an https address, the CA in
    ``ca_cert`` (else ``$PODIUM_CACERT``), else the system's CAs.

    Loading them costs ~50 ms, a tenth of a CLI command's start, and a plain
    http:// address never uses them: it gets a context that trusts no one
    (certificates still required), so a TLS connection it was somehow asked to
    make would fail rather than go unverified.
    """
    if address.startswith("http://"):
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cafile = ca_cert or os.environ.get(CACERT_ENV) or None
    if cafile:
        try:
            return ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            source = "--ca-cert" if ca_cert else CACERT_ENV
            raise PodiumError(f"cannot load the CA certificate {cafile} ({source}): {exc}") from exc
    return True


def speaks_tls(address: str, timeout: float = 2.0) -> bool:
    """Whether the server at an http:// address completes a TLS handshake instead: it runs
    with --secure, and a plain request was dropped unanswered.  Asked only after such a
    failure, to say so."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address)
    if parts.scheme != "http" or not parts.hostname:
        return False
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=parts.hostname),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def wait_seconds(wait: str | float | None) -> float | None:
    return None if wait is None else parse_duration(wait)


@dataclass(frozen=True)
class Prepared:
    """An endpoint turned into the arguments of ``httpx.Client.request``."""

    method: str
    url: str
    params: dict[str, str]
    json: Any
    timeout: httpx.Timeout
    headers: Mapping[str, str]


def resolve_namespace(namespace: str | None) -> str | None:
    """A client's namespace: ``namespace``, else ``$PODIUM_NAMESPACE``, else None."""
    return namespace or os.environ.get("PODIUM_NAMESPACE") or None


def prepare(
    endpoint: Endpoint[Any],
    index: int | None,
    wait: str | float | None,
    timeout: float,
    namespace: str | None = None,
) -> Prepared:
    params = dict(endpoint.params)
    if "namespace" not in params and namespaced(endpoint.path):
        namespace = namespace or endpoint.file_namespace
        if namespace is not None:
            params["namespace"] = namespace
    read = timeout
    if index is not None:
        params["index"] = str(index)
    seconds = wait_seconds(wait)
    if seconds is not None:
        params["wait"] = format_duration(seconds)
    if index is not None:
        # A blocking query is meant to sit on the server for up to `wait`; the
        # read timeout must outlast it (plus the server's jitter, wait/16, as
        # Nomad adds) or every quiet period would look like a dead server.
        waited = seconds if seconds is not None else DEFAULT_BLOCKING_WAIT
        read = timeout + waited + waited / 16
    return Prepared(
        method=endpoint.method,
        url=endpoint.path,
        params=params,
        json=endpoint.body,
        timeout=httpx.Timeout(timeout, read=read),
        headers=endpoint.headers,
    )


class Answer(Protocol):
    """What reading an answer needs of it: an ``httpx.Response`` is one, and so is the
    async client's aiohttp answer (:class:`podium.client._aio.AioAnswer`)."""

    @property
    def status_code(self) -> int: ...
    @property
    def reason_phrase(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    @property
    def is_error(self) -> bool: ...
    def json(self) -> Any: ...


def response_index(response: Answer, body: Any) -> int:
    """The store index an answer reflects: the header, else an ``index`` in the body."""
    header = response.headers.get(INDEX_HEADER)
    if header is not None:
        try:
            return int(header)
        except ValueError:
            pass
    if isinstance(body, dict) and isinstance(body.get("index"), int):
        return int(body["index"])
    return 0


def finish(endpoint: Endpoint[T], response: Answer) -> QueryResult[T]:
    """Turn a read response into a result, or raise the error it carries."""
    if response.is_error:
        raise error_for(response)
    content = response.content
    if endpoint.parse_json is not None and content:
        try:
            value = endpoint.parse_json(content)
        except ValueError as exc:  # pydantic.ValidationError, invalid JSON included
            raise APIError(
                response.status_code,
                f"unexpected answer from {endpoint.method} {endpoint.path}: {exc}",
            ) from exc
        return QueryResult(value, response_index(response, None), content=content)
    try:
        body = response.json() if content else None
    except ValueError as exc:
        raise APIError(
            response.status_code, f"the server answered {endpoint.path} with invalid JSON: {exc}"
        ) from exc
    try:
        value = endpoint.parse(body)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise APIError(
            response.status_code,
            f"unexpected answer from {endpoint.method} {endpoint.path}: {exc}",
            detail=body,
        ) from exc
    return QueryResult(value, response_index(response, body), raw=body, content=content)


def _issues(raw: Any) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        issues.append(
            SpecIssue(
                path=str(item.get("path") or ""),
                message=str(item.get("message") or ""),
                line=item.get("line") if isinstance(item.get("line"), int) else None,
                column=item.get("column") if isinstance(item.get("column"), int) else None,
                hint=item.get("hint") if isinstance(item.get("hint"), str) else None,
            )
        )
    return issues


def _message(response: Answer, body: Any) -> str:
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            return str(body["error"])
        detail = body.get("detail")  # FastAPI's own errors (422, 405, ...)
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail:
            first = detail[0]
            if isinstance(first, dict) and "msg" in first:
                loc = ".".join(str(p) for p in first.get("loc", []))
                return f"{loc}: {first['msg']}" if loc else str(first["msg"])
    text = response.text.strip()
    if text and len(text) < 500 and "\n" not in text:
        return text
    return f"{response.status_code} {response.reason_phrase}".strip()


def error_for(response: Answer) -> PodiumError:
    """Map an error answer onto the exception tree of :mod:`podium.errors`.

    The caller must have read the body (``response.read()``) when streaming.
    """
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    status = response.status_code
    message = _message(response, body)
    data = body if isinstance(body, dict) else {}
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status == 400 and isinstance(data.get("matches"), list):
        matches = [str(m) for m in data["matches"]]
        if matches and not any(m in message for m in matches):
            message += ": " + ", ".join(matches)
        return AmbiguousPrefix(message)
    if status == 429 and data.get("code") == "overloaded":
        return Overloaded(message, _retry_after(response.headers.get("retry-after")), body)
    if status in (400, 422) and isinstance(data.get("issues"), list):
        issues = _issues(data["issues"])
        if issues:
            return SpecError(issues=issues)
    return APIError(status, message, detail=body)


OVERLOAD_BUDGET = 120.0
"""Seconds an SDK call waits out a shed server's Retry-After answers, in all, before it
raises :class:`podium.errors.Overloaded` (the clients' ``overload_budget``)."""
RETRY_AFTER_MAX = 30.0


def _retry_after(header: str | None) -> float:
    """A ``Retry-After`` of whole seconds, bounded; 1 s where absent or unreadable (an
    HTTP date is not sent by Podium's servers)."""
    try:
        return min(RETRY_AFTER_MAX, max(0.0, float(header or "1")))
    except ValueError:
        return 1.0


def overload_wait(exc: Overloaded, waited: float, budget: float) -> float | None:
    """Seconds to wait before sending a shed request again (jittered down by up to a tenth,
    so that callers shed together do not come back together), or None when the budget is
    spent: raise then."""
    wait = exc.retry_after * (0.9 + 0.1 * random.random())
    return wait if waited + wait <= budget else None


def transport_error(address: str, exc: httpx.TransportError) -> ServerUnreachable:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return unreachable(address, "connect", exc)
    if isinstance(exc, httpx.TimeoutException):
        return unreachable(address, "timeout", exc)
    return unreachable(address, "lost", exc)


def unreachable(address: str, kind: str, exc: BaseException) -> ServerUnreachable:
    """The one wording of a failed exchange, whichever HTTP library saw it: ``kind`` is
    ``connect`` (nothing listening), ``timeout`` (no answer in time) or ``lost``."""
    if kind == "lost" and address.startswith("http://") and speaks_tls(address):
        secure = "https://" + address.removeprefix("http://")
        text = (
            f"the server at {address} speaks TLS: use {secure} (and --ca-cert or "
            f"{CACERT_ENV} with the cluster's CA certificate)"
        )
    elif _verify_failed(exc):
        text = (
            f"the server at {address} presented a certificate this client does not trust "
            f"({exc}): give the cluster's CA with --ca-cert or {CACERT_ENV}"
        )
    elif kind == "connect":
        text = f"cannot reach the Podium server at {address}: is `podium agent --dev` running?"
    elif kind == "timeout":
        text = f"the Podium server at {address} did not answer in time ({type(exc).__name__})"
    else:
        text = f"lost the connection to the Podium server at {address}: {exc or type(exc).__name__}"
    return ServerUnreachable(text, address, kind)


def _verify_failed(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def logs_timeout(timeout: float, follow: bool) -> httpx.Timeout:
    """Following a log may be silent for as long as the task is: never time out reading."""
    return httpx.Timeout(timeout, read=None if follow else timeout)


LANE_TIMEOUT = 10.0
"""Seconds a heartbeat waits for the heartbeat lane's answer before it is sent to the
API's route instead (the lane answers in milliseconds: one this late is stuck)."""
LANE_PAUSE = 60.0
"""Seconds the lane is passed over after it could not be reached (then tried again)."""


class HeartbeatLane:
    """Where a client sends its heartbeats (podium.server.lane): the lane URL its server
    named in its last answer (``heartbeat_url``), unless the lane failed lately: a
    heartbeat it did not answer goes to the API's route, as does every heartbeat for
    :data:`LANE_PAUSE` after a lane that could not be reached."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.url: str | None = None
        self._clock = clock
        self._failed: tuple[str, float] | None = None
        """The lane that failed last, and until when it is passed over."""

    def learn(self, answer: Any) -> None:
        """Take ``answer``'s lane (none: the API's route)."""
        url = answer.get("heartbeat_url") if isinstance(answer, dict) else None
        if not isinstance(url, str) or not url:
            url = None
        elif self._failed is not None and self._failed[0] == url:
            if self._clock() < self._failed[1]:
                url = None
            else:
                self._failed = None
        self.url = url

    def failed(self, exc: ServerUnreachable) -> None:
        """The lane did not answer: the API's route for a while (a lost connection, which
        a server closing an idle keep-alive can cause, is not held against it); another
        lane named meanwhile (a restarted server's, a new leader's) is taken at once."""
        if exc.kind != "lost" and self.url is not None:
            self._failed = (self.url, self._clock() + LANE_PAUSE)
            self.url = None
