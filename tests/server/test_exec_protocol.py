"""``alloc exec``'s wire protocol: what a bad request or frame is told, and the server's
grant to an agent (only for the exact command, only until it expires, only with the key)."""

from __future__ import annotations

import base64
import json

import pytest

from podium.models.acl import hash_secret
from podium.models.execproto import (
    GRANT_TTL,
    ClientFrame,
    ProtocolError,
    check_grant,
    parse_client_frame,
    parse_command,
    sign_grant,
)

KEY = hash_secret("node-secret")
NOW = 1_800_000_000.0


def test_command_must_be_a_json_array_of_strings() -> None:
    assert parse_command('["/bin/sh", "-c", "echo hi"]') == ["/bin/sh", "-c", "echo hi"]
    for raw, why in [
        (None, "command is required"),
        ("ls", "not JSON"),
        ('"ls"', "non-empty JSON array"),
        ("[]", "non-empty JSON array"),
        ('["ls", 3]', r"command\[1\] is int"),
        ('[""]', r"command\[0\] \(the program\) is empty"),
        ('["a\\u0000b"]', "NUL"),
    ]:
        with pytest.raises(ProtocolError, match=why):
            parse_command(raw)


def test_client_frames() -> None:
    data = base64.b64encode(b"hi\n").decode()
    assert parse_client_frame(json.dumps({"stdin": {"data": data}})) == ClientFrame(data=b"hi\n")
    assert parse_client_frame('{"stdin": {"close": true}}') == ClientFrame(close=True)
    assert parse_client_frame('{"tty_size": {"height": 40, "width": 120}}') == ClientFrame(
        size=(40, 120)
    )
    for raw, why in [
        ("nope", "not JSON"),
        ("[1]", "JSON object"),
        ('{"stdin": {"data": "***"}}', "stdin.data is not valid base64"),
        ('{"stdin": {}}', '"stdin" needs'),
        ('{"tty_size": {"height": -1, "width": 80}}', "tty_size.height must be an integer"),
        ('{"tty_size": {"height": 24, "width": true}}', "tty_size.width"),
        ('{"resize": 1}', "unknown frame .keys: resize."),
    ]:
        with pytest.raises(ProtocolError, match=why):
            parse_client_frame(raw)


def test_a_grant_is_good_for_its_exact_command_until_it_expires() -> None:
    cmd = ["/bin/sh", "-c", "id"]
    grant = sign_grant(KEY, "alloc-1", "web", cmd, True, NOW)
    nonce, expires = check_grant(grant, KEY, "alloc-1", "web", cmd, True, NOW + 1)
    assert expires == int(NOW) + GRANT_TTL and nonce
    other = sign_grant(KEY, "alloc-1", "web", cmd, True, NOW)
    assert other != grant, "each grant has a nonce of its own"
    wrong = [
        (hash_secret("another node"), "alloc-1", "web", cmd, True),
        (KEY, "alloc-2", "web", cmd, True),
        (KEY, "alloc-1", "db", cmd, True),
        (KEY, "alloc-1", "web", ["/bin/sh", "-c", "rm -rf /"], True),
        (KEY, "alloc-1", "web", cmd, False),
    ]
    for key, alloc, task, command, tty in wrong:
        with pytest.raises(ProtocolError, match="does not match"):
            check_grant(grant, key, alloc, task, command, tty, NOW)
    with pytest.raises(ProtocolError, match="expired"):
        check_grant(grant, KEY, "alloc-1", "web", cmd, True, NOW + GRANT_TTL + 1)
    expires_text, n, mac = grant.split(".")
    forged = f"{int(expires_text) + 3600}.{n}.{mac}"  # a later expiry breaks the MAC
    with pytest.raises(ProtocolError, match="does not match"):
        check_grant(forged, KEY, "alloc-1", "web", cmd, True, NOW)
    for bad in (None, "", "x.y", "later.n.m"):
        with pytest.raises(ProtocolError):
            check_grant(bad, KEY, "alloc-1", "web", cmd, True, NOW)
