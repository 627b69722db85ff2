"""A corpus of real-world Compose files (tests/spec/compose_corpus), converted with fidelity.

Each directory is a project modelled on a popular stack (WordPress, Gitea,
Kafka, Elasticsearch, Traefik...), with its ``.env``, Dockerfiles and config
files.  Two kinds of checks run on every file:

* the file's own expectations, in its top-level ``x-expect`` key (and
  ``x-expect-<name>`` for more scenarios: other ``env`` or ``profiles``): the
  jobs, the disabled services, the built images, *every* warning (a warning
  not listed fails the test, so nothing is dropped or added quietly), and
  values at dotted paths of the converted jobs (``{dir}`` is the project's
  directory; a ``null`` value needs the parent to exist);
* an oracle, written here independently of the converter, that reads each
  enabled service of the interpolated file and checks the fidelity points of
  issue 12 on the job: no restart and a 10 s grace unless written, reserved vs
  hard resources, ports with their host IP and protocol, binds that create
  their host path, healthchecks, depends_on conditions, build image names and
  platform constraints.

A few of them (``busybox-*``) also run for real: tests/e2e/test_compose_corpus.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from podium.models.job import JobSpec
from podium.spec import ComposeProject, load_compose_project
from podium.spec.compose_env import Interpolator, parse_dotenv

CORPUS = Path(__file__).parent / "compose_corpus"
PROJECTS = sorted(p.name for p in CORPUS.iterdir() if (p / "compose.yaml").is_file())


@dataclass
class Scenario:
    project: str
    name: str
    env: dict[str, str] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.project if self.name == "x-expect" else f"{self.project}[{self.name[9:]}]"


def scenarios() -> list[Scenario]:
    out = []
    for project in PROJECTS:
        raw = yaml.safe_load((CORPUS / project / "compose.yaml").read_text())
        keys = [k for k in raw if k == "x-expect" or k.startswith("x-expect-")]
        assert "x-expect" in keys, f"{project}/compose.yaml has no x-expect"
        for key in keys:
            expect = raw[key]
            out.append(
                Scenario(
                    project,
                    key,
                    {k: str(v) for k, v in (expect.get("env") or {}).items()},
                    list(expect.get("profiles") or []),
                    expect,
                )
            )
    return out


SCENARIOS = scenarios()


def test_the_corpus_is_large_enough_and_covers_the_fidelity_points() -> None:
    assert len(PROJECTS) >= 25
    texts = "\n".join((CORPUS / p / "compose.yaml").read_text() for p in PROJECTS)
    for needle in (
        "build:",
        "profiles:",
        '"127.0.0.1:',
        "/udp",
        "healthcheck:",
        "condition: service_healthy",
        "mem_limit:",
        "reservations:",
        "limits:",
        "cpus:",
        "${",
        "./",
        "platform: ${",
        "required: false",
    ):
        assert needle in texts, needle
    assert sum((CORPUS / p / ".env").is_file() for p in PROJECTS) >= 5


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_corpus_file_converts_as_its_author_meant(scenario: Scenario) -> None:
    base = CORPUS / scenario.project
    converted = load_compose_project(
        base / "compose.yaml", env=scenario.env, profiles=scenario.profiles
    )
    expect = scenario.expect
    assert converted.job_ids == expect["jobs"]
    assert sorted(converted.disabled) == sorted(expect.get("disabled") or [])
    assert {k: v.image for k, v in converted.builds.items()} == (expect.get("builds") or {})
    wanted = list(expect.get("warnings") or [])
    for warning in converted.warnings:
        assert any(w in warning for w in wanted), f"unexpected warning: {warning}"
    for w in wanted:
        assert any(w in warning for warning in converted.warnings), f"missing warning: {w}"
    jobs = {j.id: j.model_dump(mode="json") for j in converted.jobs}
    for path, value in (expect.get("values") or {}).items():
        if isinstance(value, str):
            value = value.replace("{dir}", str(base))
        elif isinstance(value, dict | list):
            value = yaml.safe_load(yaml.safe_dump(value).replace("{dir}", str(base)))
        assert lookup(jobs, path) == value, path
    Oracle(source(base, scenario), converted).check()


def source(base: Path, scenario: Scenario) -> dict[str, Any]:
    """The compose file as YAML reads it, interpolated (the shell's values over .env)."""
    env: dict[str, str] = {}
    if (base / ".env").is_file():
        env, problems = parse_dotenv((base / ".env").read_text(), scenario.env)
        assert not problems
    env.update(scenario.env)
    interp = Interpolator(env)

    def walk(node: Any, top: bool = False) -> Any:
        if isinstance(node, str):
            return interp.expand(node)
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            return {k: (v if top and str(k).startswith("x-") else walk(v)) for k, v in node.items()}
        return node

    data = walk(yaml.safe_load((base / "compose.yaml").read_text()), top=True)
    data["_env"] = env
    data["_base"] = base
    return dict(data)


def lookup(jobs: dict[str, Any], path: str) -> Any:
    """``job.groups.web.tasks.web.config.labels.a.b``: the longest key that matches
    at each level (label keys hold dots); list items by number."""
    parts = path.split(".")
    node: Any = jobs
    i = 0
    while i < len(parts):
        if isinstance(node, list):
            node = node[int(parts[i])]
            i += 1
            continue
        assert isinstance(node, dict), f"{path}: {'.'.join(parts[:i])} is not a mapping"
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if key in node:
                node, i = node[key], j
                break
        else:
            assert i == len(parts) - 1, f"{path}: no {parts[i]!r} in {sorted(node)}"
            return None  # a missing last key is null (pydantic leaves None out)
    return node


# -- the oracle ------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def mb(value: object) -> int:
    if isinstance(value, int):
        return max(1, -(-value // 1024**2))
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([bkmg]?)b?", str(value).strip().lower())
    assert m, value
    return max(1, -(-int(float(m.group(1)) * _UNITS[m.group(2)]) // 1024**2))


def mhz(value: object) -> int:
    return round(float(str(value)) * 1000)


def given(body: dict[str, Any], key: str) -> Any:
    value = body.get(key)
    return None if value in (None, "") else value


@dataclass
class Port:
    target: int
    published: int | None
    host_ip: str
    protocol: str


def ports_of(items: list[Any]) -> list[Port]:
    out = []
    for item in items:
        if isinstance(item, dict):
            published = item.get("published")
            out.append(
                Port(
                    int(item["target"]),
                    int(published) if published not in (None, "") else None,
                    str(item.get("host_ip") or ""),
                    str(item.get("protocol") or "tcp"),
                )
            )
            continue
        text, _, proto = str(item).partition("/")
        parts = text.split(":")
        host_ip = parts.pop(0) if len(parts) == 3 else ""
        published = int(parts[0]) if len(parts) == 2 and parts[0] else None
        out.append(Port(int(parts[-1]), published, host_ip, proto or "tcp"))
    return out


class Oracle:
    def __init__(self, data: dict[str, Any], converted: ComposeProject) -> None:
        self.data = data
        self.converted = converted

    def job_of(self, service: str) -> JobSpec:
        for job in self.converted.jobs:
            if service in job.groups:
                return job
        raise AssertionError(f"no job holds service {service!r}")

    def check(self) -> None:
        for name, svc in self.data["services"].items():
            if name in self.converted.disabled:
                assert svc.get("profiles") or [], name
                continue
            self.service(name, svc)

    def service(self, name: str, svc: dict[str, Any]) -> None:
        job = self.job_of(name)
        group = job.groups[name]
        task = group.tasks[name]
        config = task.config
        deploy = svc.get("deploy") or {}
        where = f"{self.converted.name}: {name}"

        # no restart: is no restart, here or elsewhere; 10 s to stop unless written
        if not given(svc, "restart") and not deploy.get("restart_policy"):
            assert (group.restart.attempts, group.reschedule.attempts) == (0, 0), where
            assert not group.reschedule.unlimited, where
        elif given(svc, "restart") in ("always", "unless-stopped"):
            assert group.restart.mode == "delay", where
        if not given(svc, "stop_grace_period"):
            assert task.kill_timeout == 10.0, where

        # reservations are reserved, limits are hard limits, a limit alone reserves itself
        res = deploy.get("resources") or {}
        limits, reserved = res.get("limits") or {}, res.get("reservations") or {}
        mem_max = given(svc, "mem_limit") or given(limits, "memory")
        mem = given(svc, "mem_reservation") or given(reserved, "memory")
        cpu_max = given(svc, "cpus") or given(limits, "cpus")
        cpu = given(reserved, "cpus")
        r = task.resources
        assert r.memory_max == (mb(mem_max) if mem_max else None), where
        assert r.memory == (mb(mem) if mem else mb(mem_max) if mem_max else 300), where
        assert r.cpu_max == (mhz(cpu_max) if cpu_max else None), where
        assert r.cpu == (mhz(cpu) if cpu else mhz(cpu_max) if cpu_max else 100), where

        # ports keep their host address (every interface unless written) and protocol
        published = config.get("ports") or {}
        network = group.network.ports if group.network else {}
        for port in ports_of(svc.get("ports") or []):
            matches = [
                label
                for label, spec in published.items()
                if spec["target"] == port.target
                and spec["host_ip"] == port.host_ip
                and spec.get("protocol") in (port.protocol, None)
                and network[label].static == port.published
            ]
            assert len(matches) == 1, (where, port, published)

        # binds create their host path, unless the long syntax says not to
        mounts = config.get("mounts") or []
        for item in svc.get("volumes") or []:
            if isinstance(item, str):
                source, _, rest = item.partition(":")
                target = rest.split(":")[0]
                is_bind = source.startswith(("/", ".", "~"))
                create = is_bind
            else:
                target = item["target"]
                is_bind = item.get("type") == "bind"
                create = is_bind and (item.get("bind") or {}).get("create_host_path") is not False
            (mount,) = [m for m in mounts if m["target"] == target]
            assert mount["type"] == ("bind" if is_bind else mount["type"]), where
            assert mount.get("create_host_path", False) == create, (where, target)

        # healthchecks run by the engine; depends_on conditions held by the group
        check = svc.get("healthcheck")
        if check and not check.get("disable"):
            assert config["healthcheck"]["test"], where
        conditions = {
            "service_started": "started",
            "service_healthy": "healthy",
            "service_completed_successfully": "started",
        }
        deps = svc.get("depends_on") or {}
        wanted = (
            {d: "started" for d in deps}
            if isinstance(deps, list)
            else {
                d: conditions[(body or {}).get("condition", "service_started")]
                for d, body in deps.items()
                if d not in self.converted.disabled
            }
        )
        if any(self.job_of(d) is not job for d in wanted):
            wanted = {}  # a global service is its own job: the order is a warning
        assert group.depends_on == wanted, where

        # build: the image Compose would tag; platform: a constraint or a warning
        if svc.get("build"):
            image = given(svc, "image") or f"{self.converted.name}-{name}".lower()
            assert self.converted.builds[name].image == image == config["image"], where
        platform = given(svc, "platform")
        kernels = [c.value for c in group.constraints if c.attribute == "${attr.kernel.name}"]
        assert kernels == ([str(platform).split("/")[0]] if platform else []), where
