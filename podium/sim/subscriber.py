"""The event-stream subscriber of ``podium sim --events``: a separate process that reads
``GET /v1/event/stream`` (every topic, every namespace) through a real socket from the
index it is given, while the simulation runs, and counts the events of each index.

    python -m podium.sim.subscriber http://127.0.0.1:PORT --index N

It prints ``ready`` once the stream is open.  When the simulation writes the last index
it expects events for on stdin, the subscriber reads on until it has seen that index
(or 120 s pass) and prints one JSON object: ``counts`` (index -> events), ``events``,
``bytes`` and ``error`` (the server's closing error, if the stream was cut off).  The
simulation compares ``counts`` with what its own commits wrote (``podium.sim.run``):
nothing may be missing, nothing extra.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import httpx

from podium.client import endpoints as ep
from podium.errors import APIError

HEARTBEAT = 0.5
"""Seconds between heartbeats on an idle stream: how often the stop condition is looked at."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="event stream subscriber for podium sim")
    parser.add_argument("address")
    parser.add_argument("--index", type=int, required=True)
    args = parser.parse_args(argv)
    until: list[int] = []
    stop = threading.Event()

    def watch_stdin() -> None:
        line = sys.stdin.readline().strip()
        until.append(int(line) if line.isdigit() else -1)
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    counts: dict[int, int] = {}
    events = size = 0
    error = None
    last = args.index
    params = ep.event_params(("*",), "*", args.index, HEARTBEAT)
    deadline: float | None = None
    try:
        with (
            httpx.Client(base_url=args.address, timeout=httpx.Timeout(30, read=None)) as http,
            http.stream("GET", ep.EVENT_STREAM, params=params) as response,
        ):
            if response.is_error:
                response.read()
                raise APIError(response.status_code, response.text)
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            for line in response.iter_lines():
                size += len(line) + 1
                event = ep.parse_event_line(line)
                if event is not None:
                    counts[event.index] = counts.get(event.index, 0) + 1
                    events += 1
                    last = event.index
                if stop.is_set():
                    if until[0] < 0 or last >= until[0]:
                        break
                    deadline = deadline or time.monotonic() + 120
                    if time.monotonic() > deadline:
                        break
    except (APIError, httpx.HTTPError) as exc:
        error = str(exc)
    sys.stdout.write(
        json.dumps({"counts": counts, "events": events, "bytes": size, "error": error}) + "\n"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
