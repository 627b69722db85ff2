"""Workload identity: a short-lived token each running task holds, scoped to its own job.

A task gets ``PODIUM_TOKEN`` (and the file ``secrets/podium_token`` in its task directory):
a token the servers signed, naming the allocation, task, job and namespace.  With it the task
(and the templates rendered for it) may read the variables under ``jobs/<namespace>/<job>/``
(its own job's, Nomad's ``nomad/jobs/<job>`` convention) and nothing else, unless a policy
grants more.  It is checked on every use against the store: a token whose allocation has
stopped (or was removed) no longer works, whatever its expiry says.

The form, ``pwi1.<key id>.<claims>.<mac>``: the claims are base64url JSON, the MAC is
HMAC-SHA256 over ``pwi1.<key id>.<claims>`` with a key derived (HKDF-SHA256) from the keyring
key named, so the keyring that seals variables also signs identities and nothing new has to be
kept secret or backed up.  Only the servers verify these tokens (no third party needs to, so
no public key is published: Nomad's JWTs with a JWKS endpoint are the way to go when one
does).  A task's token lives ``ttl`` (default :data:`DEFAULT_TTL`) and the agent renews it at
two-thirds of that while the task runs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from functools import cache

from podium.errors import PodiumError
from podium.server.keyring import Keyring

PREFIX = "pwi1"
DEFAULT_TTL = 3600.0
"""Seconds a workload token is valid (renewed at two-thirds of it while the task runs)."""
_HKDF_INFO = b"podium-workload-identity-v1"


class InvalidIdentity(PodiumError):
    """A workload token that is malformed, forged, signed with an unknown key or expired."""


@dataclass(frozen=True)
class WorkloadClaims:
    alloc_id: str
    task: str
    job_id: str
    namespace: str
    node_id: str
    issued_at: float
    expires_at: float

    @property
    def variables_prefix(self) -> str:
        """The variable paths this workload may read: its own job's."""
        return f"jobs/{self.namespace}/{self.job_id}/"

    def describe(self) -> str:
        return f"task {self.task} of allocation {self.alloc_id[:8]} (job {self.job_id})"


def is_workload_token(token: str) -> bool:
    return token.startswith(PREFIX + ".")


@cache
def _mac_key(secret: bytes) -> bytes:
    # imported here: a server that never sees a workload token does not load cryptography
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(
    keyring: Keyring,
    *,
    alloc_id: str,
    task: str,
    job_id: str,
    namespace: str,
    node_id: str,
    now: float,
    ttl: float = DEFAULT_TTL,
) -> str:
    """A token for ``task`` of ``alloc_id``, valid from ``now`` for ``ttl`` seconds."""
    claims = {
        "alloc_id": alloc_id,
        "task": task,
        "job_id": job_id,
        "namespace": namespace,
        "node_id": node_id,
        "issued_at": now,
        "expires_at": now + ttl,
    }
    key = keyring.active
    body = f"{PREFIX}.{key.id}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    mac = hmac.new(_mac_key(key.secret), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(keyring: Keyring, token: str, *, now: float) -> WorkloadClaims:
    """The claims of a token this keyring signed and that has not expired at ``now``."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise InvalidIdentity("not a workload identity token")
    _, key_id, claims_b64, mac_b64 = parts
    key = keyring.key(key_id)
    if key is None:
        raise InvalidIdentity("the workload token was signed with a key this server lacks")
    body = f"{PREFIX}.{key_id}.{claims_b64}"
    expected = hmac.new(_mac_key(key.secret), body.encode(), hashlib.sha256).digest()
    try:
        given = _unb64(mac_b64)
        raw = json.loads(_unb64(claims_b64))
    except (binascii.Error, ValueError) as exc:
        raise InvalidIdentity("the workload token is malformed") from exc
    if not hmac.compare_digest(expected, given):
        raise InvalidIdentity("the workload token's signature does not match")
    try:
        claims = WorkloadClaims(
            alloc_id=str(raw["alloc_id"]),
            task=str(raw["task"]),
            job_id=str(raw["job_id"]),
            namespace=str(raw["namespace"]),
            node_id=str(raw["node_id"]),
            issued_at=float(raw["issued_at"]),
            expires_at=float(raw["expires_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidIdentity("the workload token's claims are incomplete") from exc
    if now >= claims.expires_at:
        raise InvalidIdentity(f"the workload token of {claims.describe()} has expired")
    return claims
