"""``podium event stream`` against a real dev agent: a job run from another terminal shows
up as it is committed, in the order it was (``--index 0``: from the server's first commit,
so the job cannot be registered before the stream opens), and Ctrl-C ends it cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from typing import Any

from .conftest import PODIUM, DevAgent, wait_until, write_job

JOB = """
job: ticker
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sh, args: ["-c", "sleep 600"]}
        resources: {cpu: 50, memory: 32}
"""


def _reader(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)


def test_the_cli_prints_each_change_as_it_is_committed(dev_agent: DevAgent, tmp_path: Any) -> None:
    env = {**os.environ, "PODIUM_ADDR": dev_agent.addr, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [*PODIUM, "event", "stream", "-t", "Job", "-t", "Allocation", "--index", "0", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(proc, lines), daemon=True).start()
    try:
        dev_agent.cli("job", "run", "-d", write_job(tmp_path, JOB), check=True)
        seen: list[dict[str, Any]] = []

        def running() -> bool:
            while not lines.empty():
                seen.append(json.loads(lines.get()))
            return any(
                e["topic"] == "Allocation" and e["payload"]["client_status"] == "running"
                for e in seen
            )

        wait_until(running, timeout=30, what="the allocation's running event")
        assert seen[0]["type"] == "JobRegistered" and seen[0]["key"] == "ticker"
        assert [e["index"] for e in seen] == sorted(e["index"] for e in seen)
        assert {e["topic"] for e in seen} == {"Job", "Allocation"}
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
