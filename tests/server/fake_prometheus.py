"""A small real HTTP server that answers Prometheus' instant queries (``GET
/api/v1/query``, Prometheus' JSON answer) with a value the test sets: the autoscaler's
``metric: prometheus`` tests run against it (no Prometheus is installed here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class FakePrometheus:
    url: str
    value: float = 0.0
    fail: bool = False
    queries: int = 0
    last_expr: str = ""


@contextmanager
def serve_prometheus() -> Iterator[FakePrometheus]:
    state = FakePrometheus(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlparse(self.path)
            if parts.path != "/api/v1/query":
                self.send_error(404)
                return
            state.queries += 1
            state.last_expr = parse_qs(parts.query).get("query", [""])[0]
            if state.fail:
                status = 400
                body: dict[str, Any] = {
                    "status": "error",
                    "errorType": "bad_data",
                    "error": "parse error at char 3",
                }
            else:
                status = 200
                body = {
                    "status": "success",
                    "data": {
                        "resultType": "vector",
                        "result": [{"metric": {}, "value": [1700000000.0, str(state.value)]}],
                    },
                }
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
