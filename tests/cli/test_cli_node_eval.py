"""``podium node status``, ``podium eval status|list``, ``podium version``."""

from __future__ import annotations

import json

from .conftest import Invoke
from .fakes import (
    ALLOC_A,
    EVAL_ID,
    NODE_ID,
    FakeServer,
    alloc,
    evaluation,
    exhausted_metric,
    node_info,
)


def test_node_list(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/nodes", [node_info()])
    result = cli("node", "status")
    assert result.exit_code == 0, result.output
    header, row = (line.split() for line in result.output.splitlines()[:2])
    assert header == [
        "ID",
        "Name",
        "DC",
        "Pool",
        "Status",
        "Eligibility",
        "Allocs",
        "CPU",
        "Memory",
    ]
    # capacity is what the node offers minus what the agent reserves
    assert row == [
        "9b1d2e3f",
        "laptop",
        "dc1",
        "default",
        "ready",
        "eligible",
        "2",
        "200/3900",
        "MHz",
        "600/8000",
        "MB",
    ]


def test_node_list_json(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/nodes", [node_info()])
    result = cli("node", "status", "-o", "json")
    assert json.loads(result.stdout) == [node_info()]


def test_node_details(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/node/9b", node_info())
    fake.on("GET", f"/v1/node/{NODE_ID}/allocations", [alloc(ALLOC_A, "running")])
    result = cli("node", "status", "9b")
    assert result.exit_code == 0, result.output
    out = result.output
    assert NODE_ID in out and "127.0.0.1:40001" in out
    drivers = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.startswith(("raw_exec", "exec"))
    }
    assert drivers["raw_exec"][1:3] == ["yes", "yes"]
    assert drivers["exec"][1:] == ["yes", "no", "needs", "root"]
    assert "os.name" in out and "linux" in out
    alloc_row = next(line for line in out.splitlines() if line.startswith(ALLOC_A[:8]))
    assert alloc_row.split()[1] == "web"  # the job column


def test_eval_status_with_placement_failures(cli: Invoke, fake: FakeServer) -> None:
    ev = evaluation(
        failed_tg_allocs={"web": exhausted_metric()},
        queued_allocations={"web": 2},
        plan_summary={"place": 1},
        blocked_eval="b10c0000",
    )
    fake.on("GET", "/v1/evaluation/e0", ev)
    result = cli("eval", "status", "e0")
    assert result.exit_code == 0, result.output
    out = result.output
    assert EVAL_ID in out and "job-register" in out
    assert "Blocked Eval" in out and "b10c0000" in out
    assert "place 1" in out and "web: 2" in out
    assert f'Group "web" could not place 2 allocations: {exhausted_metric().describe()}' in out


def test_eval_list(cli: Invoke, fake: FakeServer) -> None:
    fake.on(
        "GET",
        "/v1/evaluations",
        [
            evaluation(create_index=5),
            evaluation(
                id="f1f2f3f4-0", create_index=9, failed_tg_allocs={"web": exhausted_metric()}
            ),
        ],
    )
    result = cli("eval", "list", "--job", "web")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert [r[0] for r in rows] == ["f1f2f3f4", EVAL_ID[:8]]  # newest first
    assert rows[0][4] == "yes" and rows[1][4] == "no"
    assert fake.requests[0].url.params["job_id"] == "web"


def test_eval_list_empty_and_json(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/evaluations", [])
    assert "No evaluations." in cli("eval", "list").output
    assert json.loads(cli("eval", "list", "-o", "json").stdout) == []


def test_version(cli: Invoke) -> None:
    from podium import __version__

    assert cli("version").output.strip() == f"podium {__version__}"
    assert json.loads(cli("version", "-o", "json").stdout) == {"version": __version__}
