"""The simulated jobs: service jobs of mock tasks, with a constraint and a spread on request."""

from __future__ import annotations

import random
from typing import Any

RESOURCES = [(25, 32), (50, 64), (100, 128), (50, 96)]
"""(cpu MHz, memory MB) per instance; jobs pick one (a mix, so bin-packing has work)."""


def sim_job(
    index: int,
    count: int,
    *,
    run_for: float = 0.0,
    constraints: bool = False,
    spread_every: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Job ``sim-{index}``: one group of ``count`` mock tasks.

    ``run_for`` 0 means "runs until stopped" (a day, for the mock driver).
    With ``constraints`` every job asks for ``${attr.cpu.arch} = amd64`` and
    every ``spread_every``-th job spreads over racks too (a spread makes the
    scheduler score every feasible node, as in Nomad, so it is the slow path).
    """
    cpu, memory = random.Random(seed * 100_003 + index).choice(RESOURCES)
    spec: dict[str, Any] = {
        "job": f"sim-{index}",
        "type": "service",
        "groups": {
            "g": {
                "count": count,
                "tasks": {
                    "t": {
                        "driver": "mock",
                        "config": {"run_for": f"{run_for}s" if run_for > 0 else "24h"},
                        "resources": {"cpu": cpu, "memory": memory},
                    }
                },
            }
        },
    }
    if constraints:
        spec["constraints"] = [{"attribute": "${attr.cpu.arch}", "value": "amd64"}]
        if spread_every > 0 and index % spread_every == 0:
            spec["spread"] = [{"attribute": "${meta.rack}", "weight": 50}]
    return spec


def probe_job(index: int) -> dict[str, Any]:
    """A small job the API probe registers while the simulation runs."""
    return {
        "job": f"probe-{index}",
        "type": "service",
        "groups": {
            "g": {
                "count": 1,
                "tasks": {
                    "t": {
                        "driver": "mock",
                        "config": {"run_for": "24h"},
                        "resources": {"cpu": 10, "memory": 16},
                    }
                },
            }
        },
    }
