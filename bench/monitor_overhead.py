"""What ``podium monitor`` costs the process it watches (issue 16).

Times N ``log.info`` calls on a ``podium.*`` logger, the process's own stderr-like handler
at INFO writing to /dev/null, in four cases, each the median of several runs:

- floor: nobody monitors (the hub's handler is not attached);
- one monitor at ``error``: attached, every record checked against its level, none kept;
- one monitor at ``info`` reading as fast as records come (an asyncio reader draining it);
- one monitor at ``info`` that never reads: its buffer fills and every further record is
  counted as dropped; the cost must stay that of an append, not a wait.

Prints each figure beside the floor measured in the same run (ratios, not seconds: these
machines are shared).  Run: ``python bench/monitor_overhead.py [N]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time

from podium import logstream

RUNS = 5


def emit(log: logging.Logger, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        log.info("placed allocation %d of job %s on node %s", i, "web", "node-1")
    return time.perf_counter() - start


async def reader(listener: logstream.Listener, stop: asyncio.Event) -> None:
    """Drain as a monitor's stream does (the lines serialised, as it sends them)."""
    while not stop.is_set():
        for line in await listener.next_batch():
            json.dumps(line)


async def main(n: int) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    sink = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115 - lives as long as the run
    sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
    root.addHandler(sink)
    root.setLevel(logging.INFO)
    log = logging.getLogger("podium.bench")
    hub = logstream.hub()

    async def case(level: int | None, read: bool) -> float:
        times = []
        for _ in range(RUNS):
            listener = hub.attach(level) if level is not None else None
            stop = asyncio.Event()
            task = (
                asyncio.create_task(reader(listener, stop))
                if read and listener is not None
                else None
            )
            elapsed = 0.0
            for _chunk in range(10):  # let the reader run between chunks, as a loop would
                elapsed += emit(log, n // 10)
                await asyncio.sleep(0)
            times.append(elapsed)
            stop.set()
            if task is not None:
                task.cancel()
            if listener is not None:
                hub.detach(listener)
        return statistics.median(times)

    floor = await case(None, False)
    rows = [
        ("floor: nobody monitors", floor),
        ("a monitor at error (nothing kept)", await case(logging.ERROR, False)),
        ("a monitor at info, reading", await case(logging.INFO, True)),
        ("a monitor at info that never reads (drops)", await case(logging.INFO, False)),
    ]
    print(f"{n:,} log.info calls, median of {RUNS} runs (stderr-like handler to /dev/null)")
    for name, t in rows:
        print(
            f"  {name:<46} {t * 1000:8.1f} ms  {t / floor:4.2f}x floor  {t / n * 1e6:5.2f} us/call"
        )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
