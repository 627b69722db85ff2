"""Docker host binds and cap_add are placement reasons: a node whose docker driver would
refuse a task is not feasible, and the reason is counted, so ``job status`` says why."""

from __future__ import annotations

from typing import Any

from podium.models import Node
from podium.models.dockerpolicy import DockerNeeds, DockerPolicy
from podium.models.taskconfig import DockerConfig
from podium.scheduler.harness import Harness, make_job, make_node


def docker_node(name: str, policy: DockerPolicy | None) -> Node:
    """A node as its agent registers it: the driver's attributes, also as node attributes."""
    node = make_node(name, drivers=("docker",))
    if policy is not None:
        attrs = policy.attributes()
        node.drivers["docker"].attributes.update(attrs)
        node.attributes.update({f"driver.docker.{k}": v for k, v in attrs.items()})
    return node


def docker_job(**config: Any) -> Any:
    return make_job("web", driver="docker", config={"image": "busybox", **config})


def test_a_host_volume_is_placed_only_where_volumes_are_allowed() -> None:
    h = Harness()
    h.add_node(docker_node("default", DockerPolicy()))
    h.add_node(docker_node("volumes", DockerPolicy(volumes=True)))
    h.register(docker_job(volumes=["/:/host"]))
    h.evaluate("web")
    (alloc,) = h.live("web")
    assert alloc.node_id == "node-volumes"


def test_nowhere_allowed_says_why_per_node() -> None:
    h = Harness()
    h.add_node(docker_node("a", DockerPolicy()))
    h.add_node(docker_node("b", DockerPolicy(volumes=True, volume_allow=("/srv",))))
    h.register(docker_job(volumes=["/:/host"]))
    metric = h.evaluate("web").eval_update.failed_tg_allocs["web"]
    assert metric.constraint_filtered == {"docker: host volume / is not allowed": 2}

    h2 = Harness()
    h2.add_node(docker_node("a", DockerPolicy()))
    h2.register(docker_job(cap_add=["SYS_ADMIN"]))
    metric = h2.evaluate("web").eval_update.failed_tg_allocs["web"]
    assert metric.describe().endswith("1 docker: cap_add SYS_ADMIN is not allowed")


def test_allowed_caps_binds_in_the_task_dir_and_named_volumes_pass() -> None:
    h = Harness()
    h.add_node(docker_node("a", DockerPolicy()))
    h.register(
        docker_job(
            cap_add=["CHOWN"],
            volumes=["./data:/data", "named:/cache"],
            mounts=[{"type": "bind", "source": "local", "target": "/l"}],
        )
    )
    h.evaluate("web")
    assert len(h.live("web")) == 1


def test_a_node_that_advertises_no_policy_is_left_to_its_driver() -> None:
    h = Harness()
    h.add_node(docker_node("old", None))
    h.register(docker_job(volumes=["/:/host"]))
    h.evaluate("web")
    assert len(h.live("web")) == 1


def test_needs_and_policy() -> None:
    cfg = DockerConfig.model_validate(
        {
            "image": "x",
            "volumes": ["/srv/a:/a", "../../etc:/e", "v:/v"],
            "cap_add": ["cap_net_admin"],
        }
    )
    needs = DockerNeeds.of(cfg)
    assert needs.host_paths == ("/srv/a", "<outside the task dir>")
    assert needs.caps == ("NET_ADMIN",)
    allow = DockerPolicy(volumes=True, volume_allow=("/srv",), allow_caps=frozenset({"ALL"}))
    assert allow.refusal(DockerNeeds(host_paths=("/srv/a",), caps=("SYS_ADMIN",))) is None
    assert allow.refusal(DockerNeeds(host_paths=("/srvx",))) == (
        "docker: host volume /srvx is not allowed"
    )
    assert DockerPolicy().refusal(DockerNeeds(privileged=True)) == (
        "docker: privileged containers are not allowed"
    )
    assert DockerPolicy.from_attributes(allow.attributes()) == allow
