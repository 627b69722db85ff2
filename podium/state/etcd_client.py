"""A small client of etcd's v3 API through its JSON gateway (``/v3/kv/txn`` ...), over httpx.

Why not a gRPC client: Podium already depends on httpx, the store's ``Backend`` seam is
synchronous (a commit returns once durable), and the Python gRPC clients are either
unmaintained (etcd3: last release 2020, breaks on protobuf >= 4) or asyncio-only and pull
grpcio + protobuf (~50 MB) in.  The gateway is part of every etcd server (3.4 and later),
takes the same requests as the gRPC API, with keys and values base64-encoded in JSON.
docs/dependencies.md has the measurement behind the choice.

Endpoints: the client tries them in turn, starting with the one that answered last.  A
connection refused, a timeout, or an etcd error that says the member cannot serve
(no leader, request timed out, ...) moves to the next member until the call's deadline;
then :class:`EtcdUnavailable` says which members were tried and what each answered.
A request that timed out may still be applied by etcd later: callers make writes safe to
retry (the store's commits compare on the previous index, see podium.state.etcd).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from podium.state.errors import StoreError

REQUEST_TIMEOUT = 5.0
"""Seconds a call may take, over every member it tries."""


class EtcdUnavailable(StoreError):
    """No member answered the request within its deadline (a quorum down, or etcd gone)."""


class EtcdCompacted(StoreError):
    """The revision a read or watch asked for was compacted away: start again from now."""

    def __init__(self, message: str, *, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes | str) -> bytes:
    """The range end that selects every key starting with ``prefix`` (etcd's rule)."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\x00"


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


def kv_of(raw: dict[str, Any]) -> KV:
    return KV(
        key=unb64(raw.get("key")).decode(),
        value=unb64(raw.get("value")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
    )


# -- request builders (the gateway's JSON shapes)
def put(key: str, value: bytes | str, *, lease: int = 0) -> dict[str, Any]:
    """A put; with ``lease`` the key is attached to it (etcd deletes it when the lease ends)."""
    body = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def get(key: str, range_end: bytes | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if range_end is not None:
        body["range_end"] = b64(range_end)
    return {"request_range": body}


def delete_range(key: str, range_end: bytes) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key), "range_end": b64(range_end)}}


def compare(key: str, target: str, value: int | bytes | str) -> dict[str, Any]:
    """``target`` is CREATE, MOD, VERSION, VALUE or LEASE; the comparison is EQUAL."""
    field = {
        "CREATE": "create_revision",
        "MOD": "mod_revision",
        "VERSION": "version",
        "VALUE": "value",
        "LEASE": "lease",
    }[target]
    wire: str = b64(value) if target == "VALUE" else str(value)  # type: ignore[arg-type]
    return {"key": b64(key), "target": target, "result": "EQUAL", field: wire}


@dataclass
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]

    def kvs(self, i: int) -> list[KV]:
        """The keys a range at position ``i`` of the branch that ran returned."""
        rng = self.responses[i].get("response_range", {})
        return [kv_of(raw) for raw in rng.get("kvs", [])]


RETRYABLE = (
    "no leader",
    "request timed out",
    "leader changed",
    "not capable",
    "stopped",
    "too many requests",
    "raft proposal dropped",
    "not started",
    "timed out",
)
"""etcd errors that mean the member cannot serve now: ask another one."""


class EtcdClient:
    """Blocking calls to one etcd cluster's gateway; safe to share between threads."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = REQUEST_TIMEOUT) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._current = 0
        self._http = httpx.Client(timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def call(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> Any:
        """POST ``body`` to ``/v3/<path>`` on a member that answers; the decoded reply."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        tried: list[str] = []
        n = len(self.endpoints)
        attempt = 0
        while True:
            endpoint = self.endpoints[(self._current + attempt) % n]
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                reply = self._http.post(
                    f"{endpoint}/v3/{path}", json=body, timeout=min(left, limit)
                )
            except httpx.HTTPError as exc:
                tried.append(f"{endpoint}: {type(exc).__name__} {exc}".strip())
            else:
                try:
                    data = reply.json() if reply.content else {}
                except ValueError:  # not the gateway's JSON (a proxy's page, say)
                    data = {"error": reply.text[:200] or f"HTTP {reply.status_code}"}
                if reply.status_code == 200 and "error" not in data:
                    self._current = (self._current + attempt) % n
                    return data
                message = str(data.get("message") or data.get("error") or reply.text)
                if "compacted" in message:
                    raise EtcdCompacted(f"etcd: {message}")
                if not any(word in message for word in RETRYABLE):
                    raise StoreError(f"etcd at {endpoint} refused /v3/{path}: {message}")
                tried.append(f"{endpoint}: {message}")
            attempt += 1
            if attempt % n == 0:  # every member said no: give them a moment
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        raise EtcdUnavailable(
            f"etcd did not answer /v3/{path} within {limit:g}s (is a quorum of its members "
            f"up?); tried {'; '.join(tried[-n:]) or 'nothing'}",
            cause=tried[-1] if tried else "",
        )

    # -- the calls the store uses
    def txn(
        self,
        compares: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        body = {"compare": compares, "success": success, "failure": failure or []}
        data = self.call("kv/txn", body, timeout=timeout)
        return TxnResult(
            succeeded=bool(data.get("succeeded", False)),
            revision=int(data.get("header", {}).get("revision", 0)),
            responses=list(data.get("responses", [])),
        )

    def range(
        self,
        key: str,
        range_end: bytes | None = None,
        *,
        revision: int = 0,
        limit: int = 0,
        serializable: bool = False,
    ) -> tuple[int, list[KV], bool]:
        """(revision read at, keys in order, more left) for ``[key, range_end)``."""
        body: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        if serializable:
            body["serializable"] = True
        data = self.call("kv/range", body)
        kvs = [kv_of(raw) for raw in data.get("kvs", [])]
        return int(data["header"]["revision"]), kvs, bool(data.get("more", False))

    def compact(self, revision: int) -> None:
        """Drop etcd's history before ``revision`` (keys' current values stay)."""
        with contextlib.suppress(EtcdCompacted):  # someone compacted as far already
            self.call("kv/compaction", {"revision": str(revision)})

    # -- leases (the leader election's: podium.state.election)
    def lease_grant(self, ttl: int, *, timeout: float | None = None) -> tuple[int, int]:
        """A new lease of ``ttl`` seconds: (its id, the TTL etcd granted).  etcd raises a
        TTL below its minimum (1.5 election timeouts) to that minimum."""
        data = self.call("lease/grant", {"TTL": str(ttl)}, timeout=timeout)
        return int(data["ID"]), int(data.get("TTL", ttl))

    def lease_keepalive(self, lease: int, *, timeout: float | None = None) -> int:
        """Renew ``lease`` for its whole TTL again: the TTL it now has, 0 when etcd no
        longer knows it (it expired or was revoked).  One request per renewal: the gateway
        answers a POST to the keepalive stream with one reply and ends it."""
        data = self.call("lease/keepalive", {"ID": str(lease)}, timeout=timeout)
        return int(data.get("result", {}).get("TTL", 0))

    def lease_revoke(self, lease: int, *, timeout: float | None = None) -> None:
        """End ``lease`` now: etcd deletes the keys attached to it.  A lease etcd no
        longer knows is already ended."""
        try:
            self.call("lease/revoke", {"ID": str(lease)}, timeout=timeout)
        except EtcdUnavailable:
            raise
        except StoreError as exc:
            if "lease not found" not in str(exc):
                raise

    def watch(self, key: str, range_end: bytes, start_revision: int) -> Watch:
        return Watch(self, key, range_end, start_revision)


class Watch:
    """A watch on ``[key, range_end)`` from ``start_revision``: iterate for batches of events
    (``(revision, [(type, KV)])``, type PUT or DELETE); :meth:`close` from any thread ends it.
    The stream is opened on one member; when it breaks, the iteration ends with
    :class:`EtcdUnavailable` (the caller reopens from the last revision it saw)."""

    def __init__(self, client: EtcdClient, key: str, range_end: bytes, start: int) -> None:
        self._client = client
        self._body = {
            "create_request": {
                "key": b64(key),
                "range_end": b64(range_end),
                "start_revision": str(start),
                "progress_notify": True,
            }
        }
        self._closed = False
        self._response: httpx.Response | None = None
        self._stream: contextlib.AbstractContextManager[httpx.Response] | None = None

    def close(self) -> None:
        self._closed = True
        response = self._response
        if response is None:
            return
        # Closing the response from another thread does not wake a read blocked on its
        # socket; shutting the socket down does (the read returns at once).
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> Iterator[tuple[int, list[tuple[str, KV]]]]:
        client = self._client
        errors: list[str] = []
        for attempt in range(len(client.endpoints)):
            if self._closed:
                return
            endpoint = client.endpoints[(client._current + attempt) % len(client.endpoints)]
            try:
                with client._http.stream(
                    "POST",
                    f"{endpoint}/v3/watch",
                    json=self._body,
                    timeout=httpx.Timeout(client.timeout, read=None),
                ) as response:
                    self._response = response
                    if self._closed:
                        return
                    yield from self._events(response)
                    return
            except (httpx.HTTPError, RuntimeError) as exc:
                if self._closed:
                    return
                errors.append(f"{endpoint}: {type(exc).__name__} {exc}")
            finally:
                self._response = None
        raise EtcdUnavailable("the etcd watch broke: " + "; ".join(errors))

    def _events(self, response: httpx.Response) -> Iterator[tuple[int, list[tuple[str, KV]]]]:
        for line in response.iter_lines():
            if self._closed:
                return
            if not line.strip():
                continue
            message = json.loads(line)
            if "error" in message:
                raise httpx.StreamError(str(message["error"]))
            result = message.get("result", {})
            compact = int(result.get("compact_revision", 0))
            if compact:
                raise EtcdCompacted(
                    f"etcd compacted its history to revision {compact}", compact_revision=compact
                )
            if result.get("canceled"):
                raise httpx.StreamError(f"watch canceled: {result.get('cancel_reason', '')}")
            revision = int(result.get("header", {}).get("revision", 0))
            events = [
                (str(event.get("type", "PUT")), kv_of(event.get("kv", {})))
                for event in result.get("events", [])
            ]
            yield revision, events
        if not self._closed:
            raise httpx.StreamError("the watch stream ended")
