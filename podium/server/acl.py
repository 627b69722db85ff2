"""Authorization: the one function at the API's edge (route -> required capability).

:data:`RULES` classifies every route of the app; :class:`AccessControl` (an ASGI
middleware, installed by :func:`install`) matches each request to its route, reads
who is asking (:mod:`podium.server.trust`) and lets it through only when that
caller holds the route's capability in the request's namespace (the ``namespace``
query parameter, ``default`` without one).  Handlers check nothing themselves;
list handlers only drop what the caller may not see (:func:`can`), since a list
may span namespaces.

With ACLs off (the default; ``--acl`` turns them on) only the agents' routes are
checked: nodes prove who they are with their node secret (``X-Podium-Node-Secret``)
always, so one node can never speak for another.  With ACLs on, everything not
granted is refused: 401 without a token (or with an unknown or expired one), 403
with a token that lacks the capability; the answer names the capability and the
namespace.  A route missing from :data:`RULES` is refused, so a new route is closed
until someone classifies it (``tests/acl`` walks every route of the app).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.routing import WebSocketRoute, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from podium.models import acl as caps
from podium.models.acl import NODE_SECRET_HEADER, SECRET_HEADER, Grants, Level
from podium.server.audit import IDENTITY_KEY as AUDIT_IDENTITY
from podium.server.trust import WORKLOAD_PREFIX, Identity, InvalidToken, Trust

DEFAULT_NAMESPACE = "default"
ALL_NAMESPACES = "*"


@dataclass(frozen=True)
class Rule:
    """What a route requires.  ``kind``:

    - ``namespace``: ``capability`` in the request's namespace (``list``: ``*`` allowed,
      the handler then filters);
    - ``service``: reading the service catalog of the request's namespace: ``read-job``,
      or a workload token of that namespace (templates' ``service()``);
    - ``variable``: ``op`` on the variable at the path (``list``: some listable path);
    - ``node`` / ``operator``: that rule at ``level``;
    - ``management``: a management token;
    - ``agent``: the node's own secret (the node in the path, or any node for reports,
      which the handler matches to the body);
    - ``register``: judged by the handler (a known node needs its secret; a new one,
      ``node: write`` or an agent certificate);
    - ``token``: any valid token; ``bootstrap`` and ``public``: anyone;
    - ``events``: any caller who may read something (a token, or an anonymous policy that
      grants anything); the handler sends each event only where :func:`event_reader`
      allows it.
    """

    kind: str
    capability: str = ""
    level: Level = Level.READ
    list: bool = False

    def describe(self, namespace: str, path: str | None = None) -> str:
        if self.kind in ("namespace", "service"):
            where = "any namespace" if namespace == ALL_NAMESPACES else f"namespace {namespace!r}"
            return f"capability {self.capability!r} in {where}"
        if self.kind == "variable":
            at = f" on {path!r}" if path else ""
            return f"variables {self.capability!r}{at} in namespace {namespace!r}"
        if self.kind in ("node", "operator"):
            return f"{self.kind}: {self.level.value}"
        if self.kind == "management":
            return "management rights (a management token)"
        return self.kind


def ns(capability: str) -> Rule:
    return Rule("namespace", capability)


def ns_list(capability: str) -> Rule:
    return Rule("namespace", capability, list=True)


def services(*, list: bool = False) -> Rule:
    return Rule("service", caps.READ_JOB, list=list)


def var(op: str) -> Rule:
    return Rule("variable", op, list=op == "list")


NODE_READ = Rule("node", level=Level.READ)
NODE_WRITE = Rule("node", level=Level.WRITE)
OPERATOR_READ = Rule("operator", level=Level.READ)
OPERATOR_WRITE = Rule("operator", level=Level.WRITE)
MANAGEMENT = Rule("management")
AGENT = Rule("agent")
REGISTER = Rule("register")
ANY_TOKEN = Rule("token")
BOOTSTRAP = Rule("bootstrap")
PUBLIC = Rule("public")
EVENTS = Rule("events")

RULES: dict[tuple[str, str], Rule] = {
    # API documents: no data
    ("GET", "/v1/openapi.json"): PUBLIC,
    ("GET", "/v1/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/v1/status"): OPERATOR_READ,
    # where the servers are (Nomad's status endpoints need no token either): agents ask
    # before they can prove anything, and the addresses are what they dialled anyway
    ("GET", "/v1/status/leader"): PUBLIC,
    ("GET", "/v1/status/peers"): PUBLIC,
    ("GET", "/v1/status/members"): OPERATOR_READ,
    # the event stream: each event filtered by what the caller may read (event_reader)
    ("GET", "/v1/event/stream"): EVENTS,
    # jobs
    ("POST", "/v1/jobs"): ns(caps.SUBMIT_JOB),
    ("GET", "/v1/jobs"): ns_list(caps.LIST_JOBS),
    ("GET", "/v1/job/{job_id}"): ns(caps.READ_JOB),
    ("DELETE", "/v1/job/{job_id}"): ns(caps.SUBMIT_JOB),
    ("GET", "/v1/job/{job_id}/allocations"): ns(caps.READ_JOB),
    ("GET", "/v1/job/{job_id}/versions"): ns(caps.READ_JOB),
    ("GET", "/v1/job/{job_id}/evaluations"): ns(caps.READ_JOB),
    ("GET", "/v1/job/{job_id}/deployment"): ns(caps.READ_JOB),
    ("GET", "/v1/job/{job_id}/deployments"): ns(caps.READ_JOB),
    ("POST", "/v1/job/{job_id}/scale"): ns(caps.SCALE_JOB),
    ("GET", "/v1/job/{job_id}/scale"): ns(caps.READ_JOB),
    ("POST", "/v1/job/{job_id}/plan"): ns(caps.SUBMIT_JOB),
    ("POST", "/v1/job/{job_id}/revert"): ns(caps.SUBMIT_JOB),
    # periodic and parameterized jobs (docs/periodic.md): dispatching is a capability of
    # its own (Nomad's dispatch-job); forcing a launch is a write of the job
    ("POST", "/v1/job/{job_id}/dispatch"): ns(caps.DISPATCH_JOB),
    ("POST", "/v1/job/{job_id}/periodic/force"): ns(caps.SUBMIT_JOB),
    ("GET", "/v1/job/{job_id}/children"): ns(caps.READ_JOB),
    # allocations
    ("GET", "/v1/allocations"): ns_list(caps.READ_JOB),
    ("GET", "/v1/allocation/{alloc_id}"): ns(caps.READ_JOB),
    ("GET", "/v1/allocation/{alloc_id}/logs"): ns(caps.READ_LOGS),
    # a WebSocket (the upgrade is a GET): a command in the task, recorded as a write
    ("GET", "/v1/allocation/{alloc_id}/exec"): ns(caps.ALLOC_EXEC),
    # evaluations, deployments, services
    ("GET", "/v1/evaluations"): ns_list(caps.READ_JOB),
    ("GET", "/v1/evaluation/{eval_id}"): ns(caps.READ_JOB),
    ("GET", "/v1/deployments"): ns_list(caps.READ_JOB),
    ("GET", "/v1/deployment/{deployment_id}"): ns(caps.READ_JOB),
    ("GET", "/v1/deployment/{deployment_id}/allocations"): ns(caps.READ_JOB),
    ("POST", "/v1/deployment/{deployment_id}/promote"): ns(caps.SUBMIT_JOB),
    ("POST", "/v1/deployment/{deployment_id}/fail"): ns(caps.SUBMIT_JOB),
    ("GET", "/v1/services"): services(list=True),
    ("GET", "/v1/service/{name}"): services(),
    # variables: per path
    ("GET", "/v1/vars"): var("list"),
    ("GET", "/v1/var/{path:path}"): var("read"),
    ("PUT", "/v1/var/{path:path}"): var("write"),
    ("DELETE", "/v1/var/{path:path}"): var("destroy"),
    # nodes, as operators see them
    ("GET", "/v1/nodes"): NODE_READ,
    ("GET", "/v1/node/{node_id}"): NODE_READ,
    ("GET", "/v1/node/{node_id}/allocations"): NODE_READ,
    ("PUT", "/v1/node/{node_id}/eligibility"): NODE_WRITE,
    ("PUT", "/v1/node/{node_id}/drain"): NODE_WRITE,
    # agents
    ("PUT", "/v1/node/register"): REGISTER,
    ("PUT", "/v1/node/{node_id}/heartbeat"): AGENT,
    ("GET", "/v1/client/node/{node_id}/allocations"): AGENT,
    ("POST", "/v1/client/node/{node_id}/allocations"): AGENT,
    ("POST", "/v1/client/allocations"): AGENT,
    ("POST", "/v1/client/node/{node_id}/identities"): AGENT,
    # TLS (--secure): joining proves itself with the join token's secret, renewing with the
    # agent's current certificate (both checked by the handlers); the join token is a
    # credential to add machines, so reading it is operator: write
    ("GET", "/v1/agent/ca"): PUBLIC,
    ("POST", "/v1/agent/join"): PUBLIC,
    ("POST", "/v1/agent/renew"): PUBLIC,
    ("POST", "/v1/agent/trust"): PUBLIC,  # the agent's certificate, checked by the handler
    ("GET", "/v1/operator/tls"): OPERATOR_READ,
    ("POST", "/v1/operator/tls/rotate-ca"): OPERATOR_WRITE,
    ("GET", "/v1/operator/join-token/agent"): OPERATOR_WRITE,
    ("POST", "/v1/operator/join-token/agent"): OPERATOR_WRITE,
    # the whole state (sealed variables, token hashes): management only, as Nomad's
    # `operator snapshot save`
    ("GET", "/v1/operator/snapshot"): MANAGEMENT,
    # namespaces: a token reads those it may read jobs in (the handlers filter)
    ("GET", "/v1/namespaces"): ANY_TOKEN,
    ("GET", "/v1/namespace/{name}"): ANY_TOKEN,
    ("PUT", "/v1/namespace/{name}"): MANAGEMENT,
    ("DELETE", "/v1/namespace/{name}"): MANAGEMENT,
    # ACL
    ("POST", "/v1/acl/bootstrap"): BOOTSTRAP,
    ("GET", "/v1/acl/policies"): MANAGEMENT,
    ("GET", "/v1/acl/policy/{name}"): MANAGEMENT,
    ("PUT", "/v1/acl/policy/{name}"): MANAGEMENT,
    ("DELETE", "/v1/acl/policy/{name}"): MANAGEMENT,
    ("POST", "/v1/acl/token"): MANAGEMENT,
    ("GET", "/v1/acl/tokens"): MANAGEMENT,
    ("GET", "/v1/acl/token/self"): ANY_TOKEN,
    ("GET", "/v1/acl/token/{accessor}"): MANAGEMENT,
    ("DELETE", "/v1/acl/token/{accessor}"): MANAGEMENT,
    # day-two operations (issue 16): a task's lifecycle, an allocation's files (read-logs
    # stands for Nomad's read-fs) and the servers' and agents' live logs (agent:read)
    ("POST", "/v1/allocation/{alloc_id}/restart"): ns(caps.ALLOC_LIFECYCLE),
    ("POST", "/v1/allocation/{alloc_id}/signal"): ns(caps.ALLOC_LIFECYCLE),
    ("POST", "/v1/allocation/{alloc_id}/stop"): ns(caps.ALLOC_LIFECYCLE),
    ("GET", "/v1/allocation/{alloc_id}/fs/ls"): ns(caps.READ_LOGS),
    ("GET", "/v1/allocation/{alloc_id}/fs/stat"): ns(caps.READ_LOGS),
    ("GET", "/v1/allocation/{alloc_id}/fs/cat"): ns(caps.READ_LOGS),
    ("GET", "/v1/agent/monitor"): OPERATOR_READ,
    # the scheduler's configuration (preemption per job type), as Nomad's
    ("GET", "/v1/operator/scheduler/configuration"): OPERATOR_READ,
    ("PUT", "/v1/operator/scheduler/configuration"): OPERATOR_WRITE,
    # the web UI (podium.server.ui_routes): the shell and its files carry no data; each
    # fragment needs what its API twin needs, and list fragments filter as lists do
    ("GET", "/"): PUBLIC,
    ("GET", "/ui"): PUBLIC,
    ("GET", "/ui/"): PUBLIC,
    ("GET", "/ui/{page:path}"): PUBLIC,
    ("GET", "/ui/static/{name}"): PUBLIC,
    ("GET", "/ui/fragment/jobs"): ns_list(caps.LIST_JOBS),
    ("GET", "/ui/fragment/job/{job_id}"): ns(caps.READ_JOB),
    ("GET", "/ui/fragment/allocation/{alloc_id}"): ns(caps.READ_JOB),
    ("GET", "/ui/fragment/nodes"): NODE_READ,
    ("GET", "/ui/fragment/node/{node_id}"): NODE_READ,
    ("GET", "/ui/fragment/topology"): NODE_READ,
    ("GET", "/ui/fragment/services"): services(list=True),
    ("GET", "/ui/fragment/evaluations"): ns_list(caps.READ_JOB),
    ("GET", "/ui/fragment/variables"): var("list"),
    ("GET", "/ui/fragment/variable/{path:path}"): var("read"),
    # metrics: how busy the cluster is, not what runs in it (Nomad's agent:read)
    ("GET", "/v1/metrics"): OPERATOR_READ,
    ("GET", "/v1/node/{node_id}/metrics"): OPERATOR_READ,  # an agent's, relayed
    ("GET", "/v1/allocation/{alloc_id}/stats"): ns(caps.READ_JOB),
}
"""Every route of the API and what it requires.  A route not listed is refused."""

AGENT_PREFIXES = ("/v1/client/", "/v1/node/")
"""The only paths checked with ACLs off (node identity is always on)."""


@dataclass
class Access:
    """What the edge learned of one request, for the handlers behind it."""

    grants: Grants | None
    """None: ACLs are off (everything visible)."""
    identity: Identity | None = None
    node_id: str | None = None
    """The node whose secret the request carries (agents' routes)."""
    namespace: str = DEFAULT_NAMESPACE
    peer_cert: Any = None
    """The agent certificate the TLS layer verified (see :func:`peer_cert`)."""


_access: ContextVar[Access | None] = ContextVar("podium_access", default=None)


def current() -> Access | None:
    """The running request's access (None outside the middleware: everything visible)."""
    return _access.get()


def audit_identity(identity: Identity) -> dict[str, str]:
    """Who made a request, as the audit log records it (never a secret)."""
    if identity.workload is not None:
        w = identity.workload
        return {
            "alloc_id": w.alloc_id,
            "task": w.task,
            "job_id": w.job_id,
            "namespace": w.namespace,
        }
    if identity.token is None:
        return {"token": "anonymous"}
    return {"accessor_id": identity.token.accessor_id, "name": identity.token.name}


def can(capability: str, namespace: str) -> bool:
    """Whether the caller may see ``namespace``'s objects through ``capability``
    (list handlers filter with it; always true with ACLs off)."""
    access = _access.get()
    return access is None or access.grants is None or access.grants.allows(capability, namespace)


def in_request_namespace(namespace: str) -> bool:
    """Whether an object of ``namespace`` may be served to this request: with ACLs on,
    only objects of the namespace the edge checked (``*`` is for lists only)."""
    access = _access.get()
    return access is None or access.grants is None or access.namespace == namespace


def can_read_services(namespace: str) -> bool:
    """Whether the caller may see ``namespace``'s services (list handlers filter with it)."""
    access = _access.get()
    return access is None or access.grants is None or access.grants.reads_services(namespace)


def can_list_variable(namespace: str, path: str) -> bool:
    access = _access.get()
    return (
        access is None
        or access.grants is None
        or access.grants.allows_variable("list", namespace, path)
    )


def event_reader() -> Callable[[str, str, str], bool] | None:
    """Who may read which events, fixed for the life of one stream: ``(topic, namespace,
    key) -> bool``, or None with ACLs off (every event).  The rule of each topic is its
    read route's: ``read-job`` for jobs, evaluations, allocations and deployments; ``node:
    read`` for nodes; the service catalogue; ``list`` on a variable's path."""
    access = _access.get()
    if access is None or access.grants is None:
        return None
    grants = access.grants

    def may_read(topic: str, namespace: str, key: str) -> bool:
        if topic == "Node":
            return grants.level("node", Level.READ)
        if topic == "Service":
            return grants.reads_services(namespace)
        if topic == "Variable":
            return grants.allows_variable("list", namespace, key)
        return grants.allows(caps.READ_JOB, namespace)

    return may_read


def may_register_node(node_id: str) -> bool:
    """Whether this request may register node ``node_id``, not seen before: always with
    ACLs off; else with ``node: write``, or with the certificate the cluster CA issued to
    that node (a join, under ``--secure``)."""
    access = _access.get()
    if access is None or access.grants is None:
        return True
    if access.grants.level("node", Level.WRITE):
        return True
    cert = agent_certificate(access)
    return cert is not None and cert.role == "agent" and cert.node_id == node_id


def agent_certificate(access: Access) -> Any:
    """The identity of the agent certificate the TLS layer verified for this request
    (:class:`podium.tls.identity.PeerIdentity`: ``role``, ``node_id``), or None."""
    return access.peer_cert


class _Refusal(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


@dataclass(frozen=True)
class _Compiled:
    regex: re.Pattern[str]
    rule: Rule | None
    template: str


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1")).strip()
    return None


def token_of(scope: Scope) -> str | None:
    """The ACL token of a request: ``Authorization: Bearer …``, else ``X-Podium-Token``."""
    auth = _header(scope, b"authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return _header(scope, SECRET_HEADER.lower().encode()) or None


def peer_cert(scope: Scope) -> Any:
    """The verified peer certificate's identity the TLS layer put in the scope
    (``scope["extensions"]["tls"]["podium_identity"]``, see podium.tls_runtime), read
    without importing the TLS code (and cryptography) into a server that has none."""
    ext = scope.get("extensions")
    if not isinstance(ext, Mapping):
        return None
    tls = ext.get("tls")
    if not isinstance(tls, Mapping):
        return None
    return tls.get("podium_identity")


class AccessControl:
    """The ASGI middleware (see the module's docstring)."""

    def __init__(self, app: ASGIApp, api: FastAPI, trust: Trust, enabled: bool) -> None:
        self.app = app
        self.api = api
        self.trust = trust
        self.enabled = enabled
        self._routes: dict[str, list[tuple[str, _Compiled]]] | None = None

    # ------------------------------------------------------------------ matching
    def _compile(self) -> dict[str, list[tuple[str, _Compiled]]]:
        """The app's routes by first path segment past ``/v1/``, each with its rule."""
        out: dict[str, list[tuple[str, _Compiled]]] = {}
        for method, path, regex in app_routes(self.api.routes):
            compiled = _Compiled(regex, RULES.get((method, path)), path)
            out.setdefault(_bucket(path), []).append((method, compiled))
        return out

    def match(self, method: str, path: str) -> tuple[_Compiled, dict[str, str]] | None:
        if self._routes is None:
            self._routes = self._compile()
        for m, compiled in self._routes.get(_bucket(path), ()):
            if m != method and m != "*":
                continue
            found = compiled.regex.match(path)
            if found is not None:
                return compiled, found.groupdict()
        return None

    # ------------------------------------------------------------------ the edge
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or (
            not self.enabled and not scope["path"].startswith(AGENT_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        try:
            access = self.decide(scope)
        except _Refusal as exc:
            body = json.dumps({"error": str(exc), **exc.extra}).encode()
            headers = [(b"content-type", b"application/json")]
            if exc.status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="podium"'))
            # a WebSocket's upgrade is refused with an HTTP answer too, where the server
            # can send one (else a close before accept: 403 with no body)
            kind = "http" if scope["type"] == "http" else "websocket.http"
            if kind == "http" or "websocket.http.response" in scope.get("extensions", {}):
                await send(
                    {"type": f"{kind}.response.start", "status": exc.status, "headers": headers}
                )
                await send({"type": f"{kind}.response.body", "body": body})
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        reset = _access.set(access)
        try:
            await self.app(scope, receive, send)
        finally:
            _access.reset(reset)

    def decide(self, scope: Scope) -> Access | None:
        """The one authorization function: the request's route, caller and namespace in;
        what the handlers may know of the caller out, or :class:`_Refusal`."""
        matched = self.match(method_of(scope), scope["path"])
        if matched is None:
            return None  # no such route: the app answers 404 or 405, with no data
        compiled, params = matched
        rule = compiled.rule
        if rule is None:
            if not self.enabled:
                return None
            raise _Refusal(
                403,
                f"{method_of(scope)} {compiled.template} is not classified for access control, "
                "so it is refused (podium.server.acl.RULES)",
            )
        if rule.kind == "agent":
            node_id = self._node(scope, params)
            scope[AUDIT_IDENTITY] = {"node_id": node_id}
            return Access(None, node_id=node_id)
        if not self.enabled:
            return None
        namespace = DEFAULT_NAMESPACE
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if key == "namespace" and value:
                namespace = value
        secret = token_of(scope)
        try:
            identity = self.trust.identify(secret)
        except InvalidToken as exc:
            if rule.kind in ("public", "bootstrap", "register"):
                identity = self.trust.identify(None)
            elif secret is not None and secret.startswith(WORKLOAD_PREFIX):
                scope[AUDIT_IDENTITY] = {"token": "workload token refused"}
                raise _Refusal(401, str(exc)) from None
            else:
                scope[AUDIT_IDENTITY] = {"token": "unknown or expired"}
                raise _Refusal(
                    401, f"{exc}: give a valid token (--token or PODIUM_TOKEN)"
                ) from None
        scope[AUDIT_IDENTITY] = audit_identity(identity)
        access = Access(identity.grants, identity, namespace=namespace, peer_cert=peer_cert(scope))
        if self._allowed(rule, identity, namespace, params):
            return access
        need = rule.describe(namespace, params.get("path"))
        if identity.anonymous:
            raise _Refusal(
                401,
                f"{method_of(scope)} {compiled.template} needs {need}, which anonymous requests "
                "do not have: give a token (--token or PODIUM_TOKEN)",
                missing=need,
            )
        raise _Refusal(
            403,
            f"{identity.who} may not {method_of(scope)} {compiled.template}: it lacks {need}",
            missing=need,
        )

    def _allowed(
        self, rule: Rule, identity: Identity, namespace: str, params: dict[str, str]
    ) -> bool:
        grants = identity.grants
        kind = rule.kind
        if kind in ("public", "bootstrap", "register"):
            return True
        if kind == "token":
            return identity.token is not None
        if kind == "events":
            return identity.token is not None or bool(grants.namespace_patterns())
        if kind == "management":
            return grants.management
        if kind in ("node", "operator"):
            return grants.level(kind, rule.level)
        if namespace == ALL_NAMESPACES:
            if not rule.list:
                raise _Refusal(400, "namespace '*' is only for lists; name one namespace")
            return self._anywhere(grants, rule)
        if kind == "service":
            return grants.reads_services(namespace)
        if kind == "variable":
            if rule.list:
                return grants.may_list_variables(namespace)
            return grants.allows_variable(rule.capability, namespace, params.get("path", ""))
        return grants.allows(rule.capability, namespace)

    def _anywhere(self, grants: Grants, rule: Rule) -> bool:
        """For ``namespace=*``: whether the capability is granted in some namespace."""
        if grants.management:
            return True
        names = {DEFAULT_NAMESPACE}
        names.update(j.namespace for j in self.trust.store.jobs())
        names.update(grants.namespace_patterns())
        if rule.kind == "variable":
            return any(grants.may_list_variables(n) for n in names)
        if rule.kind == "service":
            return any(grants.reads_services(n) for n in names)
        return any(grants.allows(rule.capability, n) for n in names)

    def _node(self, scope: Scope, params: dict[str, str]) -> str:
        """The node a request of an agent's route speaks for, proven by its secret."""
        secret = _header(scope, NODE_SECRET_HEADER.lower().encode())
        claimed = params.get("node_id")
        if claimed is not None:
            if self.trust.store.node_secret(claimed) is None:
                raise _Refusal(404, f"node {claimed!r} is not registered")
            if not self.trust.check_node_secret(claimed, secret):
                raise _Refusal(
                    401 if not secret else 403,
                    f"this request does not carry node {claimed}'s secret "
                    f"({NODE_SECRET_HEADER}): only that node's agent may use this route",
                )
            return claimed
        node_id = self.trust.node_for_secret(secret)
        if node_id is None:
            raise _Refusal(
                401,
                f"no known node secret in {NODE_SECRET_HEADER}: register the node first",
            )
        return node_id


def app_routes(routes: Iterable[Any], prefix: str = "") -> list[tuple[str, str, re.Pattern[str]]]:
    """Every ``(method, path template, regex)`` an app serves, routers included with
    ``include_router`` too (FastAPI keeps those as routers of their own).  Anything with a
    path that is neither (a mount) is listed with the method ``*``, so it is refused."""
    out: list[tuple[str, str, re.Pattern[str]]] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            inner = prefix + str(getattr(context, "prefix", "") or "")
            out.extend(app_routes(included.routes, inner))
            continue
        path = getattr(route, "path", None)
        if path is None:
            continue
        full = prefix + str(path)
        regex = compile_path(full)[0] if prefix else route.path_regex
        if isinstance(route, WebSocketRoute):  # the upgrade is a GET
            out.append(("GET", full, regex))
            continue
        methods = getattr(route, "methods", None)
        if methods is None:  # a mount: nothing here is classified for it
            out.append(("*", full, regex))
            continue
        out.extend((m, full, regex) for m in sorted(methods) if m != "HEAD")
    return out


def method_of(scope: Scope) -> str:
    """The request's method; a WebSocket's upgrade is a GET (its scope names none)."""
    return str(scope.get("method", "GET"))


def _bucket(path: str) -> str:
    parts = path.split("/", 3)
    return parts[2] if len(parts) > 2 and parts[1] == "v1" else ""


def reporting_node(claimed: str) -> None:
    """Refuse a report whose body names another node than the secret proved
    (:class:`~podium.errors.Forbidden`); the edge has checked the secret itself."""
    from podium.errors import Forbidden

    access = _access.get()
    if access is not None and access.node_id is not None and access.node_id != claimed:
        raise Forbidden(
            f"this request carries the secret of node {access.node_id} but reports as node "
            f"{claimed}: a node reports only for itself"
        )


def install(app: FastAPI, trust: Trust, enabled: bool) -> None:
    """Put the edge in front of every route of ``app`` (create_app calls this once)."""
    app.add_middleware(AccessControl, api=app, trust=trust, enabled=enabled)
