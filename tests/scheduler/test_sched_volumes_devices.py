"""Host volumes and devices in the pure scheduler (docs/volumes.md, docs/devices.md).

Nodes without a requested host volume (or with it read-only, for a writer) are
filtered with the reason counted; device instances are assigned per node, healthy only,
never twice, within the request's constraints; and the commit rule refuses a plan that
would give an instance already held (podium.scheduler.commit).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from podium.models import ClientStatus, JobSpec, JobType, Node
from podium.models.devices import DeviceGroup, DeviceInstance
from podium.models.volumes import HostVolume
from podium.scheduler import schedule
from podium.scheduler.harness import Harness, id_sequence, make_eval, make_job, make_node


def volume_node(name: str, volumes: dict[str, HostVolume]) -> Node:
    return make_node(name).model_copy(update={"host_volumes": volumes})


def volume_job(read_only: bool = False, count: int = 1) -> Any:
    return make_job(
        "db",
        count=count,
        volumes={"data": {"type": "host", "source": "pgdata", "read_only": read_only}},
        config={"run_for": 1000},
    )


def with_mount(spec: Any, read_only: bool = False) -> Any:
    data = spec.model_dump()
    data["groups"]["db"]["tasks"]["task"]["volume_mounts"] = [
        {"volume": "data", "destination": "/data", "read_only": read_only}
    ]
    return JobSpec.model_validate(data)


def test_only_nodes_with_the_host_volume_are_used_and_the_others_counted() -> None:
    h = Harness()
    for i in range(3):
        h.add_node(make_node(f"plain{i}"))
    good = h.add_node(volume_node("good", {"pgdata": HostVolume(path="/srv/pg")}))
    h.register(with_mount(volume_job(count=2)))
    result = h.evaluate("db")
    placed = result.plan.placements
    assert [a.node_id for a in placed] == [good.id, good.id]
    # with no node that has it, the reason says so in numbers
    h2 = Harness()
    for i in range(3):
        h2.add_node(make_node(f"plain{i}"))
    h2.register(with_mount(volume_job()))
    metric = h2.evaluate("db").eval_update.failed_tg_allocs["db"]
    assert metric.constraint_filtered == {"missing host volume pgdata": 3}
    assert "3 missing host volume pgdata" in metric.describe()


def test_a_read_only_host_volume_takes_only_read_only_requests() -> None:
    h = Harness()
    h.add_node(volume_node("ro", {"pgdata": HostVolume(path="/srv/pg", read_only=True)}))
    h.register(with_mount(volume_job()))
    metric = h.evaluate("db").eval_update.failed_tg_allocs["db"]
    assert metric.constraint_filtered == {"host volume pgdata is read-only": 1}

    for spec in (with_mount(volume_job(read_only=True)), with_mount(volume_job(), read_only=True)):
        h2 = Harness()
        node = h2.add_node(
            volume_node("ro", {"pgdata": HostVolume(path="/srv/pg", read_only=True)})
        )
        h2.register(spec)
        assert [a.node_id for a in h2.evaluate("db").plan.placements] == [node.id]


# -- devices ----------------------------------------------------------------------------


def gpus(
    n: int, *, model: str = "Tesla T4", memory: int = 15360, unhealthy: int = 0
) -> DeviceGroup:
    return DeviceGroup(
        vendor="nvidia",
        type="gpu",
        name=model,
        plugin="file",
        attributes={"memory": str(memory)},
        instances=[
            DeviceInstance(id=f"GPU-{model[-2:]}-{i}", index=str(i), healthy=i >= unhealthy)
            for i in range(n)
        ],
    )


def gpu_node(name: str, *groups: DeviceGroup) -> Node:
    return make_node(name, cpu=64000, memory=65536).model_copy(update={"devices": list(groups)})


def gpu_job(
    job_id: str = "train",
    count: int = 1,
    gpus_each: int = 1,
    name: str = "nvidia/gpu",
    type: JobType = JobType.SERVICE,
    **request: Any,
) -> Any:
    spec = make_job(job_id, count=count, type=type, config={"run_for": 1000})
    data = spec.model_dump()
    data["groups"][job_id]["tasks"]["task"]["resources"]["devices"] = [
        {"name": name, "count": gpus_each, **request}
    ]
    return JobSpec.model_validate(data)


def assigned(h: Harness) -> list[str]:
    return [
        d for a in h.allocs() if not a.terminal() for given in a.devices for d in given.device_ids
    ]


def test_each_instance_is_given_once_and_counts_are_respected() -> None:
    h = Harness()
    h.add_node(gpu_node("g1", gpus(4)))
    h.add_node(gpu_node("g2", gpus(2, model="A100-SXM4-40")))
    h.register(gpu_job(count=3, gpus_each=2))
    result = h.evaluate("train")
    assert len(result.plan.placements) == 3
    ids = assigned(h)
    assert len(ids) == 6 and len(set(ids)) == 6
    for alloc in h.allocs():
        (given,) = alloc.devices
        assert given.task == "task" and len(given.device_ids) == 2
        assert given.indexes == [d.rsplit("-", 1)[1] for d in given.device_ids]
    # a fourth instance finds every GPU taken: exhausted, in numbers
    h.register(gpu_job(count=4, gpus_each=2))
    metric = h.evaluate("train").eval_update.failed_tg_allocs["train"]
    assert metric.dimension_exhausted == {"devices nvidia/gpu": 2}
    assert len(set(assigned(h))) == len(assigned(h)) == 6


def test_more_than_a_node_has_is_never_placed_and_says_why() -> None:
    h = Harness()
    h.add_node(gpu_node("g1", gpus(2)))
    h.add_node(make_node("plain"))
    h.register(gpu_job(gpus_each=3))
    metric = h.evaluate("train").eval_update.failed_tg_allocs["train"]
    assert metric.constraint_filtered == {
        "fewer than 3 healthy device nvidia/gpu": 1,
        "missing device nvidia/gpu": 1,
    }
    assert h.allocs() == []


def test_unhealthy_instances_are_never_given() -> None:
    h = Harness()
    h.add_node(gpu_node("g1", gpus(3, unhealthy=2)))
    h.register(gpu_job(count=2))
    result = h.evaluate("train")
    assert len(result.plan.placements) == 1
    assert assigned(h) == ["GPU-T4-2"]
    metric = result.eval_update.failed_tg_allocs["train"]
    assert metric.dimension_exhausted == {"devices nvidia/gpu": 1}


def test_device_constraints_and_affinities_pick_the_group() -> None:
    h = Harness()
    node = h.add_node(
        gpu_node(
            "g1", gpus(2, model="Tesla T4", memory=15360), gpus(1, model="A100-80", memory=81920)
        )
    )
    h.register(
        gpu_job(
            constraints=[{"attribute": "${device.attr.memory}", "operator": ">=", "value": "40000"}]
        )
    )
    h.evaluate("train")
    assert assigned(h) == ["GPU-80-0"]
    h.register(
        gpu_job(
            "infer",
            affinities=[{"attribute": "${device.model}", "value": "Tesla T4", "weight": 100}],
        )
    )
    h.evaluate("infer")
    (alloc,) = h.allocs_by_job("infer")
    assert alloc.node_id == node.id and alloc.devices[0].name == "Tesla T4"
    # a constraint no group meets filters the node with its own reason
    h.register(
        gpu_job(
            "huge",
            constraints=[
                {"attribute": "${device.attr.memory}", "operator": ">", "value": "100000"}
            ],
        )
    )
    metric = h.evaluate("huge").eval_update.failed_tg_allocs["huge"]
    assert metric.constraint_filtered == {"device nvidia/gpu: constraints not met": 1}


def test_request_names_match_type_vendor_type_and_model() -> None:
    for name, ok in [
        ("gpu", True),
        ("nvidia/gpu", True),
        ("nvidia/gpu/Tesla T4", True),
        ("amd/gpu", False),
        ("nvidia/gpu/A100", False),
        ("fpga", False),
    ]:
        h = Harness()
        h.add_node(gpu_node("g1", gpus(1)))
        h.register(gpu_job(name=name))
        assert bool(h.evaluate("train").plan.placements) is ok, name


def test_instances_come_free_when_the_holder_has_exited() -> None:
    h = Harness()
    h.add_node(gpu_node("g1", gpus(1)))
    h.register(gpu_job("a", type=JobType.BATCH))
    h.evaluate("a")
    h.run_pending()
    h.register(gpu_job("b", type=JobType.BATCH))
    assert h.evaluate("b").plan.placements == []
    (held,) = h.allocs_by_job("a")
    h.client_update(held.id, ClientStatus.COMPLETE)
    h.evaluate("b")
    (b,) = h.allocs_by_job("b")
    assert b.devices[0].device_ids == ["GPU-T4-0"]


def test_a_system_job_gets_its_gpus_on_every_node_that_has_them() -> None:
    h = Harness()
    for i in range(2):
        h.add_node(gpu_node(f"g{i}", gpus(2)))
    h.add_node(make_node("plain"))
    h.register(gpu_job("sys", type=JobType.SYSTEM, gpus_each=2))
    result = h.evaluate("sys")
    assert len(result.plan.placements) == 2
    assert Counter(len(a.devices[0].device_ids) for a in h.allocs()) == {2: 2}


def test_the_commit_rule_refuses_an_instance_already_given() -> None:
    """Two workers plan on the same snapshot, each giving the node's only GPU: the
    second plan is refused whole, and re-planned it fails to place."""
    h = Harness()
    node = h.add_node(gpu_node("g1", gpus(1)))
    h.register(gpu_job("a"))
    h.register(gpu_job("b"))
    plan_a = schedule(h, make_eval("a", eval_id="ea"), h.now, new_id=id_sequence("pa"))
    plan_b = schedule(h, make_eval("b", eval_id="eb"), h.now, new_id=id_sequence("pb"))
    assert plan_a.plan.placements[0].devices == plan_b.plan.placements[0].devices
    assert h.apply(plan_a).rejected_nodes == []
    outcome = h.apply(plan_b)
    assert outcome.rejected_nodes == [node.id]
    assert h.allocs_by_job("b") == []
    assert assigned(h) == ["GPU-T4-0"]
    # re-planned on the latest state, nothing is free
    h.evaluate("b")
    assert h.allocs_by_job("b") == []


def test_the_commit_rule_refuses_an_unknown_or_unhealthy_instance() -> None:
    h = Harness()
    node = h.add_node(gpu_node("g1", gpus(1)))
    h.register(gpu_job("a"))
    result = schedule(h, make_eval("a", eval_id="ea"), h.now, new_id=id_sequence("pa"))
    h.set_node(node.id, devices=[gpus(1, unhealthy=1)])
    assert h.apply(result).rejected_nodes == [node.id]
