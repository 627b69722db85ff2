"""The small version of bench/agents_at_rest.py: a server with idle agents uses little CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "agents_at_rest.py"


def test_server_cpu_at_rest_with_10_agents() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--agents",
            "10",
            "--seconds",
            "3",
            "--heartbeat-ttl",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nserver CPU at rest, 10 agents, TTL 2s: {result['server_cores']:.3f} cores")
    assert result["server_cores"] < 0.5, result
