"""ACL tokens and policies, and what a set of policies grants (pure; no I/O).

Who may do what is decided in one place, :mod:`podium.server.acl`, from a route's
required capability and the caller's :class:`Grants` (the union of its policies).
These models are what the store holds and what the API returns:

- :class:`ACLPolicy`: a name, a description and the policy file's text with its
  parsed :class:`PolicyRules` (``podium.spec.acl_policy`` parses the YAML and says
  where a mistake is);
- :class:`ACLToken`: ``accessor_id`` (public, names the token) and the hash of its
  ``secret_id`` (the bearer credential, shown once at creation and never stored);
- :class:`NodeSecret`: the hash of a node's secret (handed to its agent at first
  registration), so no one else can speak for that node.

Secrets are 128-bit random values (``secrets.token_hex(16)`` and more), so a plain
SHA-256 of them is enough to store: there is nothing to brute-force that a salt or
a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

# The namespace capabilities of the contract, exactly.
LIST_JOBS = "list-jobs"
READ_JOB = "read-job"
SUBMIT_JOB = "submit-job"
DISPATCH_JOB = "dispatch-job"
READ_LOGS = "read-logs"
ALLOC_EXEC = "alloc-exec"
ALLOC_LIFECYCLE = "alloc-lifecycle"
SCALE_JOB = "scale-job"
READ_VARIABLES = "read-variables"
WRITE_VARIABLES = "write-variables"

CAPABILITIES = (
    LIST_JOBS,
    READ_JOB,
    SUBMIT_JOB,
    DISPATCH_JOB,
    READ_LOGS,
    ALLOC_EXEC,
    ALLOC_LIFECYCLE,
    SCALE_JOB,
    READ_VARIABLES,
    WRITE_VARIABLES,
)

VAR_OPS = ("read", "write", "list", "destroy")
"""What a ``variables`` path rule may grant."""

READ_CAPABILITIES = frozenset({LIST_JOBS, READ_JOB, READ_VARIABLES})
"""``policy: read`` (as Nomad's: reading logs is a ``write``-level capability)."""
WRITE_CAPABILITIES = frozenset(CAPABILITIES)

SECRET_HEADER = "X-Podium-Token"
NODE_SECRET_HEADER = "X-Podium-Node-Secret"
ANONYMOUS = "anonymous"
"""The policy that applies to requests without a token."""


class Level(StrEnum):
    """``node`` and ``operator`` rules, and a namespace's ``policy``."""

    DENY = "deny"
    READ = "read"
    WRITE = "write"


class TokenType(StrEnum):
    MANAGEMENT = "management"
    """Everything is allowed (what ``acl bootstrap`` creates)."""
    CLIENT = "client"
    """What its policies grant, nothing else."""


def hash_secret(secret: str) -> str:
    """The stored form of a token's or a node's secret (see the module's docstring)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh bearer secret: 128 random bits, as a UUID-shaped string (Nomad's form)."""
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


class NamespaceRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: Level | None = None
    capabilities: list[str] = Field(default_factory=list)
    variables: dict[str, list[str]] = Field(default_factory=dict)
    """Path glob -> operations (read, write, list, destroy)."""


class PolicyRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespaces: dict[str, NamespaceRule] = Field(default_factory=dict)
    """Namespace name or glob (``team-*``) -> rule."""
    node: Level | None = None
    operator: Level | None = None


class ACLPolicy(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    description: str = ""
    rules: str = ""
    """The policy file as written (YAML)."""
    parsed: PolicyRules = Field(default_factory=PolicyRules)
    create_index: int = 0
    modify_index: int = 0


class ACLToken(BaseModel):
    """A token as the store holds it (no secret) and as lists show it."""

    model_config = ConfigDict(extra="ignore")

    accessor_id: str
    name: str = ""
    type: TokenType = TokenType.CLIENT
    policies: list[str] = Field(default_factory=list)
    create_time: float = 0.0
    expiration_time: float | None = None
    """Wall-clock seconds after which the token is refused (None: never)."""
    create_index: int = 0
    modify_index: int = 0

    def expired(self, now: float) -> bool:
        return self.expiration_time is not None and now >= self.expiration_time


class StoredToken(ACLToken):
    secret_hash: str


class NewToken(ACLToken):
    """The answer of a token's creation: the only time its secret is shown."""

    secret_id: str


class ACLBootstrap(BaseModel):
    """The store's record that ``acl bootstrap`` was done (and by which token)."""

    id: str = "bootstrap"
    accessor_id: str
    create_index: int = 0
    modify_index: int = 0


class NodeSecret(BaseModel):
    node_id: str
    secret_hash: str
    create_index: int = 0
    modify_index: int = 0


# --------------------------------------------------------------------------- evaluation
def _pattern_rank(pattern: str) -> tuple[int, int]:
    """How specific a glob is: exact names first, then the longest literal part."""
    literal = sum(1 for c in pattern if c not in "*?[]")
    return (0 if any(c in pattern for c in "*?[") else 1, literal)


def _matching(patterns: list[str], name: str) -> str | None:
    """The most specific of ``patterns`` that matches ``name``."""
    found = [p for p in patterns if fnmatchcase(name, p)]
    return max(found, key=_pattern_rank) if found else None


class _Namespace:
    """What one namespace grants, the policies merged."""

    __slots__ = ("capabilities", "denied", "variables")

    def __init__(self) -> None:
        self.capabilities: set[str] = set()
        self.variables: dict[str, set[str]] = {}
        self.denied = False


class Grants:
    """The union of a token's policies: ask it whether a capability is granted.

    Merging follows Nomad: for each policy the most specific namespace rule that
    matches applies; capabilities add up across policies; ``deny`` anywhere wins.
    """

    def __init__(self, policies: list[PolicyRules], *, management: bool = False) -> None:
        self.management = management
        self._policies = policies
        self._cache: dict[str, _Namespace] = {}
        self.node = self._level([p.node for p in policies])
        self.operator = self._level([p.operator for p in policies])

    @staticmethod
    def _level(levels: list[Level | None]) -> Level:
        given = [lv for lv in levels if lv is not None]
        if Level.DENY in given:
            return Level.DENY
        if Level.WRITE in given:
            return Level.WRITE
        return Level.READ if Level.READ in given else Level.DENY

    def _namespace(self, namespace: str) -> _Namespace:
        found = self._cache.get(namespace)
        if found is not None:
            return found
        out = _Namespace()
        for policy in self._policies:
            key = _matching(list(policy.namespaces), namespace)
            if key is None:
                continue
            rule = policy.namespaces[key]
            if rule.policy == Level.DENY:
                out.denied = True
            elif rule.policy == Level.READ:
                out.capabilities |= READ_CAPABILITIES
            elif rule.policy == Level.WRITE:
                out.capabilities |= WRITE_CAPABILITIES
            out.capabilities.update(rule.capabilities)
            for path, ops in rule.variables.items():
                out.variables.setdefault(path, set()).update(ops)
        if out.denied:
            out.capabilities.clear()
            out.variables.clear()
        self._cache[namespace] = out
        return out

    def namespace_patterns(self) -> set[str]:
        """Every namespace name or glob the policies mention."""
        return {name for p in self._policies for name in p.namespaces}

    def allows(self, capability: str, namespace: str) -> bool:
        if self.management:
            return True
        return capability in self._namespace(namespace).capabilities

    def any_namespace(self, capability: str, namespaces: list[str]) -> bool:
        return any(self.allows(capability, ns) for ns in namespaces)

    def allows_variable(self, op: str, namespace: str, path: str) -> bool:
        """``op`` (read, write, list, destroy) on the variable at ``path``."""
        if self.management:
            return True
        ns = self._namespace(namespace)
        if op in ("read", "list") and READ_VARIABLES in ns.capabilities:
            return True
        if op in ("write", "destroy") and WRITE_VARIABLES in ns.capabilities:
            return True
        key = _matching(list(ns.variables), path)
        return key is not None and op in ns.variables[key]

    def may_list_variables(self, namespace: str) -> bool:
        """Whether any variable path of ``namespace`` may be listed (a list is then filtered)."""
        if self.management:
            return True
        ns = self._namespace(namespace)
        return READ_VARIABLES in ns.capabilities or any("list" in o for o in ns.variables.values())

    def reads_services(self, namespace: str) -> bool:
        """Whether the service catalog of ``namespace`` may be read (``read-job``)."""
        return self.allows(READ_JOB, namespace)

    def level(self, scope: str, wanted: Level) -> bool:
        """``node`` or ``operator`` at ``wanted`` (write implies read)."""
        if self.management:
            return True
        have = self.node if scope == "node" else self.operator
        if have == Level.DENY:
            return False
        return wanted == Level.READ or have == Level.WRITE


class WorkloadGrants(Grants):
    """What a task's workload token grants (docs/acl.md, "Workload identity"): read and
    list the variables under ``jobs/<namespace>/<job>/`` of its own namespace, and read
    that namespace's service catalog (templates' ``service()``); nothing else: no
    capability, no ``node`` or ``operator`` rule.  (Policies attached to a job, which
    would add to this, are not built.)"""

    def __init__(self, namespace: str, job_id: str) -> None:
        super().__init__([])
        self.namespace = namespace
        self.variables_prefix = f"jobs/{namespace}/{job_id}/"

    def allows_variable(self, op: str, namespace: str, path: str) -> bool:
        return (
            op in ("read", "list")
            and namespace == self.namespace
            and path.startswith(self.variables_prefix)
        )

    def may_list_variables(self, namespace: str) -> bool:
        return namespace == self.namespace

    def reads_services(self, namespace: str) -> bool:
        return namespace == self.namespace

    def namespace_patterns(self) -> set[str]:
        return {self.namespace}


ALLOW_ALL = Grants([], management=True)
"""What a request gets when ACLs are off."""
