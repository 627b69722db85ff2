"""The limits' options, shared by ``podium server`` and ``podium agent`` (with ``--dev`` or
``--server`` it runs a server too): the largest count, and the HTTP edge's bounds.

Each is checked here, before anything starts, and put on the runtime's config only when
given, so the runtime's defaults stay the one place they are written
(podium.models.limits, podium.server.edge, podium.server.proxy); docs/api.md ("Limits")
says why each default is what it is.
"""

from __future__ import annotations

from typing import Annotated

import typer

from podium.cli import common
from podium.models.limits import COUNT_CEILING, DEFAULT_MAX_COUNT

MaxCountOpt = Annotated[
    int | None,
    typer.Option(
        "--max-count",
        help="The most instances one group, and one job in all, may ask for: larger "
        f"counts are refused at job run, plan, scale and compose [{DEFAULT_MAX_COUNT}].",
        show_default=False,
    ),
]
MaxRequestBodyOpt = Annotated[
    str | None,
    typer.Option(
        "--max-request-body",
        help="The largest request body the HTTP server reads (bytes, or KiB/MiB/GiB); "
        "larger ones are answered 413 [8MiB].",
        show_default=False,
    ),
]
RequestReadTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--request-read-timeout",
        help="Seconds a client has to send a whole request (headers and body) after it "
        "connects or starts one; then the connection is closed [10].",
        show_default=False,
    ),
]
MaxConnectionsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-connections",
        help="Open connections the HTTP server accepts (each agent holds one); more are "
        "answered 503 and closed [10,000, or less to fit `ulimit -n`].",
        show_default=False,
    ),
]
MaxLogStreamsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-log-streams",
        help="Log streams (podium alloc logs) the server relays from agents at once; "
        "more are answered 429 with Retry-After [256].",
        show_default=False,
    ),
]
ShedLagOpt = Annotated[
    float | None,
    typer.Option(
        "--shed-lag",
        help="Seconds the server's event loop may run behind before agents' syncs and API "
        "reads are answered 429 with Retry-After (heartbeats, registrations and writes "
        "never are); 0: never shed [2].",
        show_default=False,
    ),
]
HeartbeatPortOpt = Annotated[
    str | None,
    typer.Option(
        "--heartbeat-port",
        help="The port of the server's heartbeat lane: a listener on the API's host that "
        "answers agents' heartbeats on a thread of its own, so a busy server still hears "
        "them (agents learn it from the server, and use the API's port when they cannot "
        "reach it); `0`: a free port, `off`: no lane [0].",
        show_default=False,
    ),
]
AllowedHostsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-hosts",
        help="A further name the API (and an agent's logs endpoint) answers to while ACLs "
        "are off (repeat it, or comma-separate; `*`: any). By default only the bind "
        "address, loopback and this machine's names and addresses: other Host headers get "
        "421 (DNS rebinding).",
        show_default=False,
    ),
]

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6}
_UNITS |= {"mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30}


def parse_size(text: str) -> int:
    """``8MiB``, ``500KB``, ``1048576`` as bytes; ValueError for anything else."""
    raw = text.strip().lower()
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(digits) :].strip()
    if not digits.strip().isdigit() or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size: write bytes, or a number with KiB, MiB, GiB")
    return int(digits.strip()) * _UNITS[unit]


def parse_heartbeat_port(text: str) -> int | None:
    """``--heartbeat-port``: a port (0: a free one), or None for ``off``."""
    value = text.strip().lower()
    if value == "off":
        return None
    if not value.isdigit() or int(value) > 65535:
        common.usage(f"--heartbeat-port must be a port (0-65535) or off, got {text!r}")
    return int(value)


def apply_limits(
    config: object,
    *,
    runs_server: bool,
    max_count: int | None,
    max_request_body: str | None,
    request_read_timeout: float | None,
    max_connections: int | None,
    max_log_streams: int | None,
    allowed_hosts: list[str] | None,
    shed_lag: float | None = None,
    heartbeat_port: str | None = None,
) -> None:
    """Check the limits' flags and put those given on the runtime's config.  The count and
    log-stream limits are a server's; the HTTP ones bound an agent's endpoint too."""
    if not runs_server and (
        max_count is not None
        or max_log_streams is not None
        or shed_lag is not None
        or heartbeat_port is not None
    ):
        common.usage(
            "--max-count, --max-log-streams, --shed-lag and --heartbeat-port are a server's "
            "settings: give them with --dev or --server"
        )
    if max_count is not None:
        if not 1 <= max_count <= COUNT_CEILING:
            common.usage(f"--max-count must be between 1 and {COUNT_CEILING}, got {max_count}")
        config.max_count = max_count  # type: ignore[attr-defined]
    if max_request_body is not None:
        try:
            body_limit = parse_size(max_request_body)
        except ValueError as exc:
            common.usage(f"--max-request-body: {exc}")
        if body_limit < 1024:
            common.usage("--max-request-body must be at least 1KiB")
        config.max_request_body = body_limit  # type: ignore[attr-defined]
    if request_read_timeout is not None:
        if request_read_timeout <= 0:
            common.usage("--request-read-timeout must be a positive number of seconds")
        config.request_read_timeout = request_read_timeout  # type: ignore[attr-defined]
    if max_connections is not None:
        if max_connections < 1:
            common.usage("--max-connections must be at least 1")
        config.max_connections = max_connections  # type: ignore[attr-defined]
    if max_log_streams is not None:
        if max_log_streams < 1:
            common.usage("--max-log-streams must be at least 1")
        config.max_log_streams = max_log_streams  # type: ignore[attr-defined]
    if shed_lag is not None:
        if not 0 <= shed_lag <= 3600:
            common.usage(
                f"--shed-lag must be between 0 (never shed) and 3600 seconds, got {shed_lag}"
            )
        config.shed_lag = shed_lag  # type: ignore[attr-defined]
    if heartbeat_port is not None:
        config.heartbeat_port = parse_heartbeat_port(heartbeat_port)  # type: ignore[attr-defined]
    if allowed_hosts:
        hosts = [h.strip() for v in allowed_hosts for h in v.split(",") if h.strip()]
        config.allowed_hosts = hosts  # type: ignore[attr-defined]
