"""Join tokens, in Docker Swarm's scheme: ``PDM-1-<CA fingerprint>-<secret>``.

The fingerprint (SHA-256 of the CA certificate, base32) lets a new agent check the CA a
server sends it before it trusts anything, so no CA file is copied by hand; the secret
lets the server check the agent.  An agent sends the secret only over a connection it
has verified against the pinned CA.

What the server keeps (``<data_dir>/server/tls/``, all 0600): ``join.json``, the token's
generation and the SHA-256 of its secret (what joins are checked against), and
``join.key``, the random key the secret is derived from (HMAC-SHA256 of the role and
generation).  The server can thus print the current token again (``podium join-token
agent``) without storing it; whoever reads ``join.key`` can mint the token, exactly as
whoever reads ``ca.key`` can mint certificates, which is why both stay in the server's
data dir and nowhere else.  ``rotate`` moves to the next generation: the old secret no
longer matches the stored hash, so it refuses new joins; agents that joined keep their
certificates (and renew them with those, not with the token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from podium.tls import TLSError
from podium.tls.files import SECRET_MODE, private_dir, write_file

PREFIX = "PDM"
VERSION = "1"
ROLES = ("agent",)
_TOKEN_RE = re.compile(
    r"^PDM-(?P<version>[0-9]+)-(?P<fp>[a-z2-7]{52})-(?P<secret>[a-z2-7]{20,64})$"
)
KEY_FILE = "join.key"
STATE_FILE = "join.json"


@dataclass(frozen=True)
class JoinToken:
    fingerprint: str
    """SHA-256 of the CA certificate (see :func:`podium.tls.ca.fingerprint`)."""
    secret: str

    def __str__(self) -> str:
        return f"{PREFIX}-{VERSION}-{self.fingerprint}-{self.secret}"


def parse_token(text: str) -> JoinToken:
    """A join token from its text; a clear error for anything else (the text is never
    echoed back whole: it may be a real secret pasted into the wrong place)."""
    value = text.strip()
    if value[:4].upper() == "PDM-":
        value = "PDM-" + value[4:].lower()
    m = _TOKEN_RE.match(value)
    if m is None:
        raise TLSError(
            "the join token is not one `podium join-token agent` printed: "
            "expected PDM-1-<52 characters of CA fingerprint>-<secret>"
        )
    if m["version"] != VERSION:
        raise TLSError(f"join token version {m['version']} is not supported (this is {VERSION})")
    return JoinToken(m["fp"], m["secret"])


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class JoinTokens:
    """The server's join tokens (one role: agent), kept in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        key_path = directory / KEY_FILE
        if not key_path.exists():
            private_dir(directory)
            write_file(key_path, os.urandom(32), SECRET_MODE)
        self._key = key_path.read_bytes()
        if len(self._key) < 32:
            raise TLSError(
                f"{key_path} is damaged (shorter than 32 bytes); remove it to start over"
            )
        state_path = directory / STATE_FILE
        self._generation = 0
        self._hash = ""
        if state_path.exists():
            try:
                state = json.loads(state_path.read_text())
                self._generation = int(state["agent"]["generation"])
                self._hash = str(state["agent"]["hash"])
            except (ValueError, KeyError, TypeError) as exc:
                raise TLSError(f"{state_path} is damaged ({exc}); remove it to start over") from exc
        if not self._hash:
            self._save()

    @property
    def generation(self) -> int:
        return self._generation

    def _derive(self, generation: int) -> str:
        mac = hmac.new(self._key, f"agent/{generation}".encode(), hashlib.sha256).digest()
        return base64.b32encode(mac[:20]).decode().rstrip("=").lower()

    def _save(self) -> None:
        self._hash = hash_secret(self._derive(self._generation))
        state = {"agent": {"generation": self._generation, "hash": self._hash}}
        write_file(self.directory / STATE_FILE, json.dumps(state).encode(), SECRET_MODE)

    def current(self, ca_fingerprint: str) -> JoinToken:
        return JoinToken(ca_fingerprint, self._derive(self._generation))

    def rotate(self) -> None:
        """A new secret: the old token refuses new joins from now on."""
        self._generation += 1
        self._save()

    def check(self, secret: str) -> bool:
        """Whether ``secret`` is the current one (constant time)."""
        return hmac.compare_digest(hash_secret(secret.strip().lower()), self._hash)
