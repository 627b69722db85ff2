"""The keys that seal variables, kept outside the store.

Variables are stored encrypted (:class:`podium.models.EncryptedVariable`): their
items' JSON sealed with AES-256-GCM under a key that lives in a keyring file,
never in the store.  Whoever holds only the store file (its SQLite pages, its
WAL, a backup of it, an etcd dump later) sees paths, indexes and ciphertext,
never a value.

- Where the key lives: ``<data_dir>/server/keyring/<key_id>.key`` (directory
  0700, file 0600), created on a server's first start; or the one file named by
  ``podium server --keyring-file``.  Back it up apart from the store: without it
  the variables cannot be read.
- Each seal uses a fresh random 96-bit nonce.  The variable's namespace and
  path are the associated data, so a ciphertext moved to another path (or
  namespace) fails to open rather than answering as that other variable.
- Several keys may sit in the directory (rotation): every one of them opens,
  the newest seals.  Variables name the key that sealed them (``key_id``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import stat
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from podium.errors import PodiumError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("podium.server")

KEY_BYTES = 32
NONCE_BYTES = 12
ALGORITHM = "aes256-gcm"
_AAD_PREFIX = b"podium-variable-v1\0"


class KeyringError(PodiumError):
    """A key is missing, unreadable, or does not open what it is asked to open."""


@dataclass(frozen=True)
class Key:
    id: str
    secret: bytes
    created: float

    def __repr__(self) -> str:  # never print the secret
        return f"Key(id={self.id!r}, created={self.created!r})"


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: str
    """base64"""
    ciphertext: str
    """base64: AES-GCM output (ciphertext and 16-byte tag)"""


def associated_data(namespace: str, path: str) -> bytes:
    return _AAD_PREFIX + namespace.encode() + b"\0" + path.encode()


def _aead(secret: bytes) -> AESGCM:
    """The cipher, imported on first use: cryptography's Rust library is ~6 MB of every
    server's memory, and a server that never seals a variable never needs it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(secret)


def new_key(clock: float | None = None) -> Key:
    return Key(
        id=uuid.uuid4().hex,
        secret=os.urandom(KEY_BYTES),  # what AESGCM.generate_key does
        created=time.time() if clock is None else clock,
    )


def _key_document(key: Key) -> bytes:
    return (
        json.dumps(
            {
                "key_id": key.id,
                "algorithm": ALGORITHM,
                "created": key.created,
                "key": base64.b64encode(key.secret).decode(),
            },
            indent=2,
        )
        + "\n"
    ).encode()


def write_key_file(path: Path, key: Key) -> None:
    """Write ``key`` to a new file, mode 0600 from its first byte (never replaces one)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, _key_document(key))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if a key file appeared meanwhile: keep that one
    finally:
        os.unlink(tmp)
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read_key_file(path: Path) -> Key:
    try:
        st = path.stat()
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyringError(f"cannot read keyring file {path}: {exc.strerror or exc}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "keyring file %s is readable by others (mode %o): chmod 600 it",
            path,
            stat.S_IMODE(st.st_mode),
        )
    try:
        doc = json.loads(raw)
        secret = base64.b64decode(doc["key"], validate=True)
        key = Key(id=str(doc["key_id"]), secret=secret, created=float(doc.get("created", 0.0)))
        algorithm = doc.get("algorithm", ALGORITHM)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise KeyringError(
            f"keyring file {path} is not a Podium key (JSON with key_id and a base64 key): {exc}"
        ) from exc
    if algorithm != ALGORITHM or len(secret) != KEY_BYTES or not key.id:
        raise KeyringError(
            f"keyring file {path} holds no {ALGORITHM} key of {KEY_BYTES} bytes with an id"
        )
    return key


class Keyring:
    """The keys this server seals and opens variables with."""

    def __init__(self, keys: Iterable[Key], where: str = "memory") -> None:
        self._keys = {k.id: k for k in keys}
        if not self._keys:
            raise KeyringError(f"the keyring at {where} holds no key")
        self.where = where
        self.active = max(self._keys.values(), key=lambda k: (k.created, k.id))

    def __repr__(self) -> str:
        return f"Keyring(where={self.where!r}, keys={sorted(self._keys)!r})"

    # ---------------------------------------------------------------- loading
    @classmethod
    def ephemeral(cls) -> Keyring:
        """One key in memory only: for in-memory stores (tests), which die with it."""
        return cls([new_key()], where="memory")

    @classmethod
    def load_or_create(cls, directory: Path) -> Keyring:
        """Every ``*.key`` in ``directory``; a new key there when it has none."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)
        files = sorted(directory.glob("*.key"))
        if not files:
            key = new_key()
            write_key_file(directory / f"{key.id}.key", key)
            log.info("created keyring key %s in %s", key.id, directory)
            files = sorted(directory.glob("*.key"))
        return cls([read_key_file(f) for f in files], where=str(directory))

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        """The key in one file (``--keyring-file``), created (0600) if it does not exist."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileExistsError):
                write_key_file(path, new_key())
                log.info("created keyring file %s", path)
        return cls([read_key_file(path)], where=str(path))

    def key(self, key_id: str) -> Key | None:
        """The key named ``key_id``, if this keyring holds it."""
        return self._keys.get(key_id)

    # ---------------------------------------------------------------- sealing
    def seal(self, namespace: str, path: str, plaintext: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = _aead(self.active.secret).encrypt(
            nonce, plaintext, associated_data(namespace, path)
        )
        return Sealed(
            key_id=self.active.id,
            nonce=base64.b64encode(nonce).decode(),
            ciphertext=base64.b64encode(ciphertext).decode(),
        )

    def open(self, namespace: str, path: str, sealed: Sealed) -> bytes:
        what = f"variable {path!r}" + (
            f" (namespace {namespace})" if namespace != "default" else ""
        )
        key = self._keys.get(sealed.key_id)
        if key is None:
            raise KeyringError(
                f"cannot decrypt {what}: it was sealed with key {sealed.key_id}, "
                f"which is not in the keyring at {self.where} (restore that key file)"
            )
        from cryptography.exceptions import InvalidTag

        try:
            nonce = base64.b64decode(sealed.nonce, validate=True)
            ciphertext = base64.b64decode(sealed.ciphertext, validate=True)
            return _aead(key.secret).decrypt(nonce, ciphertext, associated_data(namespace, path))
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise KeyringError(
                f"cannot decrypt {what} with key {key.id} from {self.where}: the key does not "
                "match, or the stored ciphertext was altered or moved from another path"
            ) from exc
