"""Workload identity tokens: issued, verified, and refused when forged, foreign or expired."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.server import identity
from podium.server.identity import InvalidIdentity
from podium.server.keyring import Keyring, new_key, write_key_file


def make(keyring: Keyring, now: float = 1000.0, ttl: float = 60.0) -> str:
    return identity.issue(
        keyring,
        alloc_id="a1b2c3d4-0000",
        task="web",
        job_id="shop",
        namespace="team-a",
        node_id="n1",
        now=now,
        ttl=ttl,
    )


def test_a_token_round_trips_its_claims() -> None:
    ring = Keyring.ephemeral()
    token = make(ring)
    assert identity.is_workload_token(token)
    claims = identity.verify(ring, token, now=1030.0)
    assert (claims.alloc_id, claims.task, claims.job_id, claims.namespace, claims.node_id) == (
        "a1b2c3d4-0000",
        "web",
        "shop",
        "team-a",
        "n1",
    )
    assert claims.expires_at == 1060.0
    assert claims.variables_prefix == "jobs/team-a/shop/"


def test_an_expired_token_is_refused() -> None:
    ring = Keyring.ephemeral()
    with pytest.raises(InvalidIdentity, match="expired"):
        identity.verify(ring, make(ring), now=1060.0)


def test_a_token_from_another_keyring_is_refused() -> None:
    with pytest.raises(InvalidIdentity, match="key this server lacks"):
        identity.verify(Keyring.ephemeral(), make(Keyring.ephemeral()), now=1001.0)


def test_altered_claims_break_the_signature() -> None:
    ring = Keyring.ephemeral()
    prefix, key_id, _claims, mac = make(ring).split(".")
    # another token's claims (job "other" in team-b) spliced under this token's MAC
    forged_claims = identity.issue(
        ring, alloc_id="x", task="t", job_id="other", namespace="team-b", node_id="n", now=1000.0
    ).split(".")[2]
    with pytest.raises(InvalidIdentity, match="signature"):
        identity.verify(ring, ".".join((prefix, key_id, forged_claims, mac)), now=1001.0)


@pytest.mark.parametrize("token", ["", "pwi1", "pwi1.a.b", "pwi1.k.!!.??", "jwt.a.b.c"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidIdentity):
        identity.verify(Keyring.ephemeral(), token, now=0.0)


def test_a_keyring_with_the_old_key_still_verifies_after_rotation(tmp_path: Path) -> None:
    first = Keyring.load_or_create(tmp_path)
    token = make(first)
    newer = new_key(clock=first.active.created + 10)
    write_key_file(tmp_path / f"{newer.id}.key", newer)
    rotated = Keyring.load_or_create(tmp_path)
    assert rotated.active.id == newer.id
    assert identity.verify(rotated, token, now=1001.0).job_id == "shop"
