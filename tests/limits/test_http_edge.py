"""The HTTP edge against a real ``podium server`` and real sockets (issue 14): a request
that never finishes arriving is closed after --request-read-timeout; connections past
--max-connections do not raise the server's fd count, and normal requests are still
answered; a body over --max-request-body is answered 413 and changes nothing."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.e2e.conftest import wait_until
from tests.limits.realserver import RealServer, job, real_server


def _connect(server: RealServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=20)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (raises socket.timeout if it never does)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_a_half_sent_request_is_closed_after_the_read_timeout(tmp_path: Path) -> None:
    with real_server(tmp_path, "--request-read-timeout", "1") as server:
        with _connect(server) as half, _connect(server) as silent, _connect(server) as body:
            started = time.monotonic()
            half.sendall(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            body.sendall(
                b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                b'\r\nContent-Length: 1000\r\n\r\n{"job":'
            )
            answer = _read_all(half)  # socket timeout 20 s: today it never closes
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert b"did not arrive within 1s" in answer
            assert _read_all(silent).startswith(b"HTTP/1.1 408 ")  # never sent a byte
            _read_all(body)  # headers sent, body never finished
            assert time.monotonic() - started < 10
        # a whole request waiting longer than the timeout for its answer is not cut off
        r = httpx.get(f"{server.addr}/v1/jobs", params={"index": 10_000, "wait": "3s"}, timeout=20)
        assert r.status_code == 200


def _held(server: RealServer, n: int, stack: ExitStack) -> Iterator[socket.socket]:
    for _ in range(n):
        sock = stack.enter_context(_connect(server))
        sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        yield sock


def test_connections_past_the_cap_keep_the_fd_count_bounded(tmp_path: Path) -> None:
    cap = 40
    with (
        real_server(
            tmp_path, "--max-connections", str(cap), "--request-read-timeout", "60"
        ) as server,
        ExitStack() as stack,
    ):
        base = server.fds()
        socks = list(_held(server, 300, stack))
        wait_until(lambda: server.fds() <= base + cap + 5, what="slow connections to be shed")
        # normal clients are answered meanwhile: a slow half-sent request makes room
        for _ in range(20):
            r = httpx.get(f"{server.addr}/v1/status", timeout=10)
            assert r.status_code == 200
        assert server.fds() <= base + cap + 5, (server.fds(), base)
        closed = 0
        for sock in socks[:-cap]:
            sock.settimeout(10)
            try:
                _read_all(sock)
                closed += 1
            except OSError:
                closed += 1  # reset: closed as well
        assert closed == len(socks) - cap


def test_when_every_connection_holds_a_request_a_new_one_gets_503(tmp_path: Path) -> None:
    cap = 20
    with (
        real_server(tmp_path, "--max-connections", str(cap)) as server,
        ExitStack() as stack,
    ):
        for _ in range(cap):
            sock = stack.enter_context(_connect(server))
            sock.sendall(b"GET /v1/jobs?index=100000&wait=30s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_until(
            lambda: server.connections() >= cap, timeout=60, what="the blocking queries to be held"
        )
        with _connect(server) as extra:
            answer = _read_all(extra)  # answered at once, before it sends anything
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert "limit (--max-connections)" in json.loads(body)["error"]


def test_an_oversized_body_gets_413_and_changes_nothing(tmp_path: Path) -> None:
    with (
        real_server(tmp_path, "--max-request-body", "64KiB") as server,
        httpx.Client(base_url=server.addr, timeout=30) as c,
    ):
        big = job(1, meta={"pad": "x" * 30_000}) | {"padding": "y" * 100_000}
        r = c.post("/v1/jobs", json=big)
        assert r.status_code == 413, r.text
        assert "larger than this server's limit of 65536 bytes" in r.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked
            payload = json.dumps(big).encode()
            for i in range(0, len(payload), 8192):
                yield payload[i : i + 8192]

        r = c.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert "--max-request-body" in r.json()["error"]
        assert c.get("/v1/jobs").json() == []
        small = c.post("/v1/jobs", json=job(1, meta={"pad": "x" * 1000}))
        assert small.status_code == 200, small.text
