"""The keyring: AES-GCM sealing bound to a variable's path, keys kept in files, clear failures."""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from podium.server.keyring import (
    Keyring,
    KeyringError,
    Sealed,
    new_key,
    read_key_file,
    write_key_file,
)


def test_round_trip_and_fresh_nonces() -> None:
    ring = Keyring.ephemeral()
    a = ring.seal("default", "app/config", b'{"db_url":"postgres://x"}')
    b = ring.seal("default", "app/config", b'{"db_url":"postgres://x"}')
    assert a.key_id == ring.active.id
    assert a.nonce != b.nonce and a.ciphertext != b.ciphertext
    assert b"postgres" not in base64.b64decode(a.ciphertext)
    assert ring.open("default", "app/config", a) == b'{"db_url":"postgres://x"}'
    assert ring.open("default", "app/config", b) == b'{"db_url":"postgres://x"}'


def test_wrong_key_fails_clearly() -> None:
    sealed = Keyring.ephemeral().seal("default", "app/config", b"secret")
    other = Keyring.ephemeral()
    # the variable names a key the other keyring lacks
    with pytest.raises(KeyringError, match="not in the keyring"):
        other.open("default", "app/config", sealed)
    # same key id, different key material: the tag does not verify
    forged = replace(sealed, key_id=other.active.id)
    with pytest.raises(KeyringError, match="key does not match"):
        other.open("default", "app/config", forged)


def test_tampered_ciphertext_is_refused() -> None:
    ring = Keyring.ephemeral()
    sealed = ring.seal("default", "app/config", b"secret value")
    raw = bytearray(base64.b64decode(sealed.ciphertext))
    raw[0] ^= 0x01
    tampered = replace(sealed, ciphertext=base64.b64encode(bytes(raw)).decode())
    with pytest.raises(KeyringError, match="altered"):
        ring.open("default", "app/config", tampered)
    with pytest.raises(KeyringError):
        ring.open("default", "app/config", replace(sealed, nonce="not base64!"))


def test_path_and_namespace_are_bound_in() -> None:
    ring = Keyring.ephemeral()
    sealed = ring.seal("default", "app/config", b"secret")
    # a ciphertext copied to another path (or namespace) does not open as that variable
    with pytest.raises(KeyringError, match="moved from another path"):
        ring.open("default", "app/other", sealed)
    with pytest.raises(KeyringError):
        ring.open("prod", "app/config", sealed)
    assert ring.open("default", "app/config", sealed) == b"secret"


def test_directory_keyring_is_created_once_with_private_modes(tmp_path: Path) -> None:
    where = tmp_path / "server" / "keyring"
    ring = Keyring.load_or_create(where)
    files = list(where.glob("*.key"))
    assert [f.name for f in files] == [f"{ring.active.id}.key"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    sealed = ring.seal("default", "a", b"x")
    again = Keyring.load_or_create(where)  # a restart finds the same key
    assert again.active.id == ring.active.id
    assert again.open("default", "a", sealed) == b"x"
    assert list(where.glob("*.key")) == files
    assert "secret" not in repr(ring.active)


def test_keyring_file_option(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "podium.key"
    ring = Keyring.from_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path).id == ring.active.id
    assert Keyring.from_file(path).active.secret == ring.active.secret


def test_bad_key_files_fail_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not json")
    with pytest.raises(KeyringError, match="not a Podium key"):
        Keyring.from_file(bad)
    short = tmp_path / "short.key"
    short.write_text(json.dumps({"key_id": "k", "key": base64.b64encode(b"x" * 5).decode()}))
    with pytest.raises(KeyringError, match="32 bytes"):
        Keyring.from_file(short)
    with pytest.raises(KeyringError, match="no key"):
        Keyring([])


def test_rotation_newest_key_seals_older_keys_still_open(tmp_path: Path) -> None:
    where = tmp_path / "keyring"
    old = Keyring.load_or_create(where)
    sealed_old = old.seal("default", "p", b"old")
    newer = new_key(clock=old.active.created + 10)
    write_key_file(where / f"{newer.id}.key", newer)
    ring = Keyring.load_or_create(where)
    assert ring.active.id == newer.id
    assert ring.open("default", "p", sealed_old) == b"old"
    assert ring.seal("default", "p", b"new").key_id == newer.id
    assert isinstance(sealed_old, Sealed)


def test_the_runtime_uses_the_keyring_file_or_the_data_dir(tmp_path: Path) -> None:
    from podium.runtime import AgentConfig, _load_keyring

    ring = _load_keyring(AgentConfig(), tmp_path)
    assert ring.where == str(tmp_path / "server" / "keyring")
    custom = tmp_path / "elsewhere" / "podium.key"
    ring = _load_keyring(AgentConfig(keyring_file=str(custom)), tmp_path)
    assert ring.where == str(custom) and custom.exists()
    custom.write_text("garbage")
    # `podium server` prints this as one line and exits 1
    with pytest.raises(ValueError, match="is not a Podium key"):
        _load_keyring(AgentConfig(keyring_file=str(custom)), tmp_path)
