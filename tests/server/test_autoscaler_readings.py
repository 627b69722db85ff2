"""The autoscaler's readings, pure: an allocation's usage in percent of its reservation
(CPU through its node's core speed), and the one number of a Prometheus answer (or why
there is none)."""

from __future__ import annotations

from typing import Any

import pytest

from podium.models import Allocation, Node, NodeResources, Resources
from podium.models.stats import AllocResourceUsage
from podium.server.autoscaler import MetricError, core_mhz, parse_query_answer, usage_percent


def node(attrs: dict[str, str], cpu: int = 4000) -> Node:
    return Node(
        id="n1",
        name="n1",
        resources=NodeResources(cpu=cpu, memory=8000),
        attributes=attrs,
    )


def alloc(cpu: int = 100, memory: int = 64) -> Allocation:
    return Allocation.model_validate(
        {
            "id": "a1",
            "eval_id": "e1",
            "name": "web.g[0]",
            "node_id": "n1",
            "job_id": "web",
            "group": "g",
            "job_version": 0,
            "index": 0,
            "resources": Resources(cpu=cpu, memory=memory).model_dump(),
        }
    )


def usage(cpu_percent: float = 0.0, memory_bytes: int = 0) -> AllocResourceUsage:
    return AllocResourceUsage(
        alloc_id="a1",
        node_id="n1",
        timestamp=0.0,
        cpu_percent=cpu_percent,
        memory_bytes=memory_bytes,
    )


def test_core_speed_from_the_fingerprint_else_the_total_over_cores() -> None:
    assert core_mhz(node({"cpu.frequency": "2500"})) == 2500
    assert core_mhz(node({"cpu.numcores": "2"}, cpu=4000)) == 2000
    assert core_mhz(node({})) == 1000


def test_cpu_in_percent_of_the_reservation() -> None:
    n = node({"cpu.frequency": "2000"})
    # half a 2,000 MHz core is 1,000 MHz: ten times a 100 MHz reservation
    assert usage_percent("cpu", n, alloc(cpu=100), usage(cpu_percent=50)) == pytest.approx(1000)
    assert usage_percent("cpu", n, alloc(cpu=1000), usage(cpu_percent=25)) == pytest.approx(50)


def test_memory_in_percent_of_the_reservation() -> None:
    n = node({})
    assert usage_percent(
        "memory", n, alloc(memory=64), usage(memory_bytes=48 * 1024 * 1024)
    ) == pytest.approx(75)


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {"i": str(i)}, "value": [1.0, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_a_vector_of_one_sample_or_a_scalar() -> None:
    assert parse_query_answer(vector("12.5")) == 12.5
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}
    assert parse_query_answer(scalar) == 3.0


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (vector(), "returned 0 series, not one"),
        (vector("1", "2"), "returned 2 series, not one: aggregate them"),
        (vector("NaN"), "returned nan, not a finite number"),
        (vector("x"), "malformed"),
        ({"status": "error", "error": "bad query"}, "the query failed: bad query"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "a matrix"),
        ([1, 2], "not a Prometheus answer"),
    ],
)
def test_answers_without_one_number(answer: Any, says: str) -> None:
    with pytest.raises(MetricError, match=says):
        parse_query_answer(answer)
