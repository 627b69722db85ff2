"""Who is asking: ACL tokens and policies, the bootstrap, and nodes' secrets.

This module keeps the credentials (always hashed in the store, see
:mod:`podium.models.acl`) and answers "what may the bearer of this secret do"
(:meth:`Trust.identify`) and "is this the node it claims to be"
(:meth:`Trust.node_for_secret`).  It decides nothing about routes: that is
:mod:`podium.server.acl`, the one authorization function at the API's edge.

``acl bootstrap`` works once (Nomad's rule).  To bootstrap again (the management
token was lost), write the bootstrap record's index into the file
``<data-dir>/server/acl-bootstrap-reset`` and call bootstrap again: the reset
file proves access to the server's disk, as Nomad's ``acl-bootstrap-reset`` does.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from podium.errors import Conflict, Forbidden, NotFound
from podium.models.acl import (
    ANONYMOUS,
    ACLBootstrap,
    ACLPolicy,
    ACLToken,
    Grants,
    NewToken,
    NodeSecret,
    PolicyRules,
    StoredToken,
    TokenType,
    WorkloadGrants,
    hash_secret,
    new_secret,
)
from podium.spec.acl_policy import check_policy_name, parse_policy
from podium.state import StateStore
from podium.state.store import ACL_META, ACL_POLICIES, ACL_TOKENS

if TYPE_CHECKING:
    from podium.server.identity import WorkloadClaims
    from podium.server.keyring import Keyring

RESET_FILE = "acl-bootstrap-reset"
WORKLOAD_PREFIX = "pwi1."
"""How a workload token begins (podium.server.identity.PREFIX), told apart without
importing the signer (and cryptography) for every ACL token."""


@dataclass(frozen=True)
class Identity:
    """The caller of one request, once its token (or its absence) is read."""

    grants: Grants
    token: ACLToken | None
    """None: anonymous, or a workload."""
    workload: WorkloadClaims | None = None
    """A task's workload token (podium.server.workload): what it names."""

    @property
    def anonymous(self) -> bool:
        return self.token is None and self.workload is None

    @property
    def who(self) -> str:
        if self.workload is not None:
            return f"the workload token of {self.workload.describe()}"
        if self.token is None:
            return "anonymous"
        return f"token {self.token.name or self.token.accessor_id[:8]}"


class InvalidToken(Exception):
    """The request carries a token that is unknown or expired (401)."""


class Trust:
    def __init__(
        self,
        store: StateStore,
        clock: Callable[[], float] = time.time,
        reset_dir: Path | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.store = store
        self.keyring = keyring
        """Verifies workload tokens (none: every workload token is refused)."""
        self.clock = clock
        self.reset_dir = reset_dir
        """Where ``acl-bootstrap-reset`` is looked for (the server's data dir)."""
        self._grants: dict[str | None, Grants] = {}
        self._stamp = -1

    # ------------------------------------------------------------------ identities
    def _cached(self) -> dict[str | None, Grants]:
        stamp = self.store.table_index(ACL_TOKENS, ACL_POLICIES)
        if stamp != self._stamp:
            self._grants = {}
            self._stamp = stamp
        return self._grants

    def _grants_for(self, token: StoredToken | None) -> Grants:
        cache = self._cached()
        key = token.accessor_id if token is not None else None
        found = cache.get(key)
        if found is None:
            if token is not None and token.type == TokenType.MANAGEMENT:
                found = Grants([], management=True)
            else:
                names = token.policies if token is not None else [ANONYMOUS]
                rules: list[PolicyRules] = []
                for name in names:
                    policy = self.store.acl_policy(name)
                    if policy is not None:
                        rules.append(policy.parsed)
                found = Grants(rules)
            cache[key] = found
        return found

    def identify(self, secret: str | None) -> Identity:
        """The caller: anonymous without a secret; :class:`InvalidToken` for a bad one."""
        if not secret:
            return Identity(self._grants_for(None), None)
        if secret.startswith(WORKLOAD_PREFIX):
            return self._workload(secret)
        token = self.store.acl_token_by_secret(hash_secret(secret))
        if token is None:
            raise InvalidToken("the ACL token is not known (deleted, or from another cluster)")
        if token.expired(self.clock()):
            raise InvalidToken(f"the ACL token {token.accessor_id} has expired")
        return Identity(self._grants_for(token), _public(token))

    def _workload(self, secret: str) -> Identity:
        """A task's workload token: signed by this cluster's keyring, unexpired, and its
        allocation still running where the token says (checked on every use)."""
        from podium.server import identity, workload

        if self.keyring is None:
            raise InvalidToken("this server cannot verify workload tokens (no keyring)")
        try:
            claims = identity.verify(self.keyring, secret, now=self.clock())
        except identity.InvalidIdentity as exc:
            raise InvalidToken(str(exc)) from None
        why = workload.refusal(self.store, claims)
        if why is not None:
            raise InvalidToken(why)
        return Identity(WorkloadGrants(claims.namespace, claims.job_id), None, claims)

    # ------------------------------------------------------------------ bootstrap
    def bootstrap(self) -> NewToken:
        """Create the first management token; refused once done (see the module's docstring)."""
        done = self.store.acl_bootstrap()
        if done is not None and not self._reset_requested(done):
            raise Conflict(
                f"ACL bootstrap already done (reset index {done.create_index}); to do it again, "
                f"write {done.create_index} into <data-dir>/server/{RESET_FILE} on the server"
            )
        txn = self.store.txn()
        token, secret = self._new_token(
            txn.index, "bootstrap token", TokenType.MANAGEMENT, [], None
        )
        txn.put_acl(ACL_TOKENS, token)
        txn.put_acl(
            ACL_META,
            ACLBootstrap(
                accessor_id=token.accessor_id, create_index=txn.index, modify_index=txn.index
            ),
        )
        self.store.commit(txn)
        if done is not None and self.reset_dir is not None:
            (self.reset_dir / RESET_FILE).unlink(missing_ok=True)
        return NewToken(**_public(token).model_dump(), secret_id=secret)

    def _reset_requested(self, done: ACLBootstrap) -> bool:
        if self.reset_dir is None:
            return False
        try:
            text = (self.reset_dir / RESET_FILE).read_text().strip()
        except OSError:
            return False
        return text == str(done.create_index)

    # ------------------------------------------------------------------ policies
    def put_policy(self, name: str, rules: str, description: str = "") -> ACLPolicy:
        check_policy_name(name)
        parsed = parse_policy(rules, source=f"policy {name}")
        txn = self.store.txn()
        old = self.store.acl_policy(name)
        policy = ACLPolicy(
            name=name,
            description=description,
            rules=rules,
            parsed=parsed,
            create_index=old.create_index if old is not None else txn.index,
            modify_index=txn.index,
        )
        txn.put_acl(ACL_POLICIES, policy)
        self.store.commit(txn)
        return policy

    def policy(self, name: str) -> ACLPolicy:
        found = self.store.acl_policy(name)
        if found is None:
            raise NotFound(f"ACL policy {name!r} not found")
        return found

    def delete_policy(self, name: str) -> int:
        self.policy(name)
        txn = self.store.txn()
        txn.delete_acl(ACL_POLICIES, name)
        return self.store.commit(txn)

    # ------------------------------------------------------------------ tokens
    def _new_token(
        self,
        index: int,
        name: str,
        type: TokenType,
        policies: list[str],
        ttl: float | None,
    ) -> tuple[StoredToken, str]:
        secret = new_secret()
        now = self.clock()
        token = StoredToken(
            accessor_id=str(uuid.uuid4()),
            name=name,
            type=type,
            policies=policies,
            create_time=now,
            expiration_time=now + ttl if ttl is not None else None,
            create_index=index,
            modify_index=index,
            secret_hash=hash_secret(secret),
        )
        return token, secret

    def create_token(
        self, name: str, type: TokenType, policies: list[str], ttl: float | None
    ) -> NewToken:
        if type == TokenType.CLIENT and not policies:
            raise ValueError("a client token needs at least one policy (--policy NAME)")
        if type == TokenType.MANAGEMENT and policies:
            raise ValueError("a management token may do everything: it takes no policies")
        missing = [p for p in policies if self.store.acl_policy(p) is None]
        if missing:
            raise ValueError(
                "no such ACL policy: " + ", ".join(missing) + " (podium acl policy apply first)"
            )
        if ttl is not None and ttl <= 0:
            raise ValueError("a token's ttl must be positive")
        txn = self.store.txn()
        token, secret = self._new_token(txn.index, name, type, policies, ttl)
        txn.put_acl(ACL_TOKENS, token)
        self.store.commit(txn)
        return NewToken(**_public(token).model_dump(), secret_id=secret)

    def token(self, accessor: str) -> ACLToken:
        found = self.store.acl_token(accessor)
        if found is None:
            matches = [t for t in self.store.acl_tokens() if t.accessor_id.startswith(accessor)]
            if len(matches) == 1 and accessor:
                found = matches[0]
        if found is None:
            raise NotFound(f"ACL token {accessor!r} not found")
        return _public(found)

    def tokens(self) -> list[ACLToken]:
        return [_public(t) for t in self.store.acl_tokens()]

    def delete_token(self, accessor: str) -> int:
        token = self.token(accessor)
        txn = self.store.txn()
        txn.delete_acl(ACL_TOKENS, token.accessor_id)
        return self.store.commit(txn)

    # ------------------------------------------------------------------ nodes
    def node_for_secret(self, secret: str | None) -> str | None:
        """The node whose secret this is, or None."""
        if not secret:
            return None
        return self.store.node_by_secret(hash_secret(secret))

    def check_node_secret(self, node_id: str, secret: str | None) -> bool:
        """Whether ``secret`` is ``node_id``'s; False when the node has none yet."""
        record = self.store.node_secret(node_id)
        if record is None or not secret:
            return False
        return hmac.compare_digest(record.secret_hash, hash_secret(secret))

    def registration(self, node_id: str, secret: str | None, may_create: bool) -> str | None:
        """Judge a node's registration before it is written: None for a known node that
        presented its secret; a new secret (to store, hashed, with the node, and hand to
        its agent once) for a node not seen before.  Raises :class:`Forbidden`."""
        if self.store.node_secret(node_id) is not None:
            if self.check_node_secret(node_id, secret):
                return None
            raise Forbidden(
                f"node {node_id} is registered already, and this request does not carry its "
                "node secret (X-Podium-Node-Secret): a node id cannot be taken over"
            )
        if not may_create:
            raise Forbidden(
                f"registering a new node ({node_id}) needs an ACL token with node: write "
                "(podium agent --token, or PODIUM_TOKEN)"
            )
        return new_secret()

    @staticmethod
    def node_secret_record(node_id: str, secret: str, index: int) -> NodeSecret:
        return NodeSecret(
            node_id=node_id, secret_hash=hash_secret(secret), create_index=index, modify_index=index
        )


def _public(token: StoredToken | ACLToken) -> ACLToken:
    return ACLToken.model_validate(token.model_dump(exclude={"secret_hash"}))
