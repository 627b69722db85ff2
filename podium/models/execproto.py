"""``alloc exec``'s wire protocol: the WebSocket frames and the server's grant to an agent.

Nomad's frames, so its clients' habits carry over (docs/api.md)::

    client -> {"stdin": {"data": "<base64>"}}   {"stdin": {"close": true}}
              {"tty_size": {"height": 40, "width": 120}}
    server -> {"stdout": {"data": "<base64>"}}  {"stderr": {"data": "<base64>"}}
              {"exited": true, "result": {"exit_code": 3}}
              {"error": "why"}   (then the socket closes)

The server relays a session to the allocation's agent; the agent runs a command in a task
only for a request that carries the server's *grant*: an HMAC over what is to run, keyed
with the node secret's stored hash, which only the node's agent (it holds the secret) and
the servers (they store the hash) can compute.  So a plain-HTTP agent endpoint runs nothing
for whoever reaches its port; the grant expires in seconds and carries a nonce that the
agent accepts once.  Pure functions only: the server signs, the agent verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

GRANT_TTL = 30
"""Seconds a server's grant is good for: the relay dials the agent at once."""
MAX_COMMAND_ARGS = 256
MAX_COMMAND_BYTES = 64 * 1024
MAX_FRAME_BYTES = 1024 * 1024
"""A client frame larger than this is refused (stdin arrives in small chunks)."""
MAX_TTY = 10_000
"""Rows or columns past this are refused (a terminal is never that large)."""
GRANT_HEADER = "X-Podium-Exec-Grant"


class ProtocolError(ValueError):
    """A frame or request that does not follow the protocol; the message says what."""


def parse_command(raw: str | None) -> list[str]:
    """``command``: a JSON array of strings, the program first (``["/bin/sh", "-c", "x"]``)."""
    if raw is None or not raw.strip():
        raise ProtocolError('command is required: a JSON array of strings, e.g. ["/bin/sh"]')
    if len(raw) > MAX_COMMAND_BYTES:
        raise ProtocolError(f"command is {len(raw)} bytes, more than {MAX_COMMAND_BYTES}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"command is not JSON ({exc}): give an array of strings") from None
    if not isinstance(value, list) or not value:
        raise ProtocolError("command must be a non-empty JSON array of strings")
    if len(value) > MAX_COMMAND_ARGS:
        raise ProtocolError(f"command has {len(value)} arguments, more than {MAX_COMMAND_ARGS}")
    for i, arg in enumerate(value):
        if not isinstance(arg, str):
            raise ProtocolError(f"command[{i}] is {type(arg).__name__}, not a string")
        if "\x00" in arg:
            raise ProtocolError(f"command[{i}] contains a NUL byte")
    if not value[0]:
        raise ProtocolError("command[0] (the program) is empty")
    return list(value)


@dataclass(frozen=True)
class ClientFrame:
    """One client frame: stdin bytes, the end of stdin, or a terminal size."""

    data: bytes | None = None
    close: bool = False
    size: tuple[int, int] | None = None
    """(height, width)."""


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{where} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{where} is not valid base64") from None


def _dimension(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TTY:
        raise ProtocolError(f"{where} must be an integer from 0 to {MAX_TTY}, not {value!r}")
    return value


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """A client's frame, or :class:`ProtocolError` naming what is wrong and where."""
    if len(text) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(text)} bytes, more than {MAX_FRAME_BYTES}")
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("frame must be a JSON object")
    if "stdin" in msg:
        stdin = msg["stdin"]
        if not isinstance(stdin, dict):
            raise ProtocolError('"stdin" must be an object: {"data": base64} or {"close": true}')
        if stdin.get("close") is True:
            return ClientFrame(close=True)
        if "data" in stdin:
            return ClientFrame(data=_b64(stdin["data"], "stdin.data"))
        raise ProtocolError('"stdin" needs "data" (base64) or "close": true')
    if "tty_size" in msg:
        size = msg["tty_size"]
        if not isinstance(size, dict):
            raise ProtocolError('"tty_size" must be an object: {"height": h, "width": w}')
        height = _dimension(size.get("height"), "tty_size.height")
        width = _dimension(size.get("width"), "tty_size.width")
        return ClientFrame(size=(height, width))
    raise ProtocolError(
        f'unknown frame (keys: {", ".join(sorted(msg)) or "none"}): expected "stdin" or "tty_size"'
    )


def output_frame(stream: str, data: bytes) -> str:
    return json.dumps({stream: {"data": base64.b64encode(data).decode()}})


def stdin_frame(data: bytes) -> str:
    return json.dumps({"stdin": {"data": base64.b64encode(data).decode()}})


def stdin_close_frame() -> str:
    return json.dumps({"stdin": {"close": True}})


def tty_size_frame(height: int, width: int) -> str:
    return json.dumps({"tty_size": {"height": height, "width": width}})


def exited_frame(exit_code: int) -> str:
    return json.dumps({"exited": True, "result": {"exit_code": exit_code}})


def error_frame(message: str) -> str:
    return json.dumps({"error": message})


# ---------------------------------------------------------------------------- the grant
def _grant_message(
    alloc_id: str, task: str, command: list[str], tty: bool, expires: int, nonce: str
) -> bytes:
    return json.dumps(
        [alloc_id, task, command, tty, expires, nonce], separators=(",", ":")
    ).encode()


def sign_grant(
    secret_hash: str, alloc_id: str, task: str, command: list[str], tty: bool, now: float
) -> str:
    """The server's grant: ``<expires>.<nonce>.<hmac hex>``, keyed with the stored hash
    of the node's secret (:func:`podium.models.acl.hash_secret`)."""
    expires = int(now) + GRANT_TTL
    nonce = secrets.token_hex(12)
    mac = hmac.new(
        secret_hash.encode(),
        _grant_message(alloc_id, task, command, tty, expires, nonce),
        hashlib.sha256,
    ).hexdigest()
    return f"{expires}.{nonce}.{mac}"


def check_grant(
    grant: str | None,
    secret_hash: str,
    alloc_id: str,
    task: str,
    command: list[str],
    tty: bool,
    now: float,
) -> tuple[str, int]:
    """``(nonce, expires)`` of a valid grant for exactly this command; else ProtocolError
    (the agent answers 403).  The caller refuses a nonce it has seen."""
    if not grant:
        raise ProtocolError(f"no exec grant ({GRANT_HEADER}): only a server may start an exec")
    parts = grant.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        raise ProtocolError("the exec grant is malformed")
    expires, nonce, mac = int(parts[0]), parts[1], parts[2]
    want = hmac.new(
        secret_hash.encode(),
        _grant_message(alloc_id, task, command, tty, expires, nonce),
        hashlib.sha256,
    ).hexdigest()
    if not hmac.compare_digest(want, mac):
        raise ProtocolError("the exec grant does not match this node and command")
    if now > expires:
        raise ProtocolError("the exec grant has expired")
    return nonce, expires
