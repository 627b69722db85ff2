"""One Compose service → one Podium group of one ``docker`` task.

See ``docs/compose.md`` for the table of what maps to what.  The rule is
Compose's meaning, not Podium's defaults: no ``restart:`` is no restart, a
10 s stop grace period, no memory limit the author did not write, ports on the
host address and protocol written.  Fields Podium cannot honour are refused
with a reason (``extends:``) or named in a warning, never dropped without a
word; a few are only recorded under ``compose.*`` group meta keys
(``update_config``, ``expose``...).  An empty value (``${VAR:-}`` unset) is
no value, as in Compose.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from podium.models.duration import format_duration
from podium.spec.compose_build import BuildSpec, default_image, parse_build
from podium.spec.compose_context import META_PREFIX, Context, Shared, Skip, meta_json
from podium.spec.compose_env import parse_dotenv
from podium.spec.compose_mounts import convert_files, convert_tmpfs, convert_volumes
from podium.spec.compose_values import (
    PortSpec,
    catalog_name,
    cpus_mhz,
    parse_constraint,
    parse_platform,
    parse_port,
    parse_spread,
    port_label,
    size_mb,
)
from podium.spec.locations import PathKey
from podium.spec.messages import describe, suggest

# Service keys that convert (see ServiceConverter); the rest of the Compose spec is
# either refused with a reason or ignored with a warning.
SERVICE_KEYS = (
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "secrets",
    "configs",
    "depends_on",
    "healthcheck",
    "labels",
    "restart",
    "logging",
    "networks",
    "network_mode",
    "user",
    "working_dir",
    "hostname",
    "cap_add",
    "cap_drop",
    "privileged",
    "deploy",
    "scale",
    "cpus",
    "mem_limit",
    "mem_reservation",
    "stop_signal",
    "stop_grace_period",
    "pull_policy",
    "platform",
    "container_name",
    "profiles",
)
_SERVICE_REFUSED = {
    "extends": "extends: is not supported yet: copy the fields of the base service in",
    "volumes_from": "volumes_from: is not supported: declare the shared volume on both services",
    "provider": "provider: services are not supported",
}
_SERVICE_IGNORED = frozenset(
    {
        "annotations", "attach", "blkio_config", "cgroup", "cgroup_parent", "cpu_count",
        "cpu_percent", "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime",
        "cpu_shares", "cpuset", "credential_spec", "develop", "device_cgroup_rules", "devices",
        "dns", "dns_opt", "dns_search", "domainname", "driver_opts", "external_links",
        "extra_hosts", "gpus", "group_add", "init", "ipc", "isolation", "label_file", "links",
        "mac_address", "mem_swappiness", "memswap_limit", "models", "oom_kill_disable",
        "oom_score_adj", "pid", "pids_limit", "post_start", "pre_stop", "read_only", "runtime",
        "security_opt", "shm_size", "stdin_open", "storage_opt", "sysctls", "tty", "ulimits",
        "use_api_socket", "userns_mode", "uts",
    }
)  # fmt: skip
DEPLOY_KEYS = (
    "mode",
    "replicas",
    "resources",
    "restart_policy",
    "update_config",
    "rollback_config",
    "placement",
    "labels",
    "endpoint_mode",
)
DEPENDS_CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
DEPENDS_KEYS = ("condition", "restart", "required")
STOP_GRACE_DEFAULT = 10.0
"""Compose's stop grace period when a service gives none (Podium's own default is 5 s)."""
LABEL_IMAGE = "podium.compose.image"
"""Container label with the built image's id: a rebuilt image changes the task, so
``compose up`` replaces the container, as Compose recreates one whose image changed."""
_LOOPBACK = ("127.", "::1")
GROUP_CONDITIONS = {
    "service_started": "started",
    "service_healthy": "healthy",
    "service_completed_successfully": "completed_successfully",
}
"""Compose's depends_on conditions → :attr:`podium.models.job.Group.depends_on`."""
LABEL_PROJECT = "podium.compose.project"
LABEL_SERVICE = "podium.compose.service"
"""Container labels naming the Compose project and service (``docker ps --filter``)."""
_NETWORK_ENTRY_KEYS = ("aliases", "priority")
_NETWORK_ENTRY_IGNORED = (
    "ipv4_address",
    "ipv6_address",
    "link_local_ips",
    "mac_address",
    "driver_opts",
    "gw_priority",
    "interface_name",
)

# restart: always / unless-stopped / restart_policy any: restart forever, 5 s apart.
# More attempts per interval than 5 s delays fit in it, and mode delay waits out
# the interval instead of failing, so the count never runs out.
RESTART_ALWAYS: dict[str, Any] = {
    "attempts": 1000,
    "interval": 1800.0,
    "delay": 5.0,
    "mode": "delay",
}
# on-failure:N counts restarts over the container's life; a day is the window here.
RESTART_COUNTED_INTERVAL = 86400.0


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ServiceConverter:
    """One service's conversion into a group of one docker task."""

    def __init__(self, conv: Context, name: str, body: dict[str, Any], shared: Shared) -> None:
        self.c = conv
        self.name = name
        self.body = body
        self.shared = shared
        self.path: PathKey = ("services", name)
        self.config: dict[str, Any] = {}
        self.task: dict[str, Any] = {"driver": "docker", "config": self.config}
        self.meta: dict[str, str] = {f"{META_PREFIX}service": name}
        self.group: dict[str, Any] = {"meta": self.meta, "tasks": {name: self.task}}
        self.depends_on: dict[str, str] = {}
        self.depends_paths: dict[str, PathKey] = {}
        self.is_global = False
        self.has_healthcheck = False
        """A health check the engine runs (``test`` given or the image's), not disabled."""
        self.depends_optional: set[str] = set()
        """Dependencies with ``required: false``: a missing one is a warning, not an error."""
        self.env: dict[str, str] = {}
        self.mounts: list[dict[str, Any]] = []
        self.network_entries: dict[str, dict[str, Any]] = {}
        self.build: BuildSpec | None = None

    def at(self, *parts: object) -> PathKey:
        return (*self.path, *parts)

    def given(self, key: str, body: dict[str, Any] | None = None) -> Any:
        """The value of ``key``, or None when it is absent, null or empty: an
        interpolation that came out empty (``${PLATFORM:-}``) leaves it unset."""
        value = (self.body if body is None else body).get(key)
        return None if value is None or value == "" else value

    def convert(self) -> ServiceConverter:
        c = self.c
        for key in self.body:
            if key.startswith("x-") or key in SERVICE_KEYS:
                continue
            if key in _SERVICE_REFUSED:
                c.err(self.at(key), _SERVICE_REFUSED[key], key=True)
            elif key in _SERVICE_IGNORED:
                c.warn(f"service {self.name!r}: {key}: is not supported yet and was ignored")
            else:
                close = suggest(key, list(SERVICE_KEYS))
                hint = f"did you mean {close!r}?" if close else "see docs/compose.md for the keys"
                c.err(self.at(key), f"unknown service key {key!r}", hint, key=True)
        c.attempt(self._image)
        steps: list[tuple[str, Callable[[Any], None]]] = [
            ("command", self._command),
            ("entrypoint", self._entrypoint),
            ("env_file", self._env_file),
            ("environment", self._environment),
            ("ports", self._ports),
            ("expose", self._expose),
            ("volumes", lambda v: convert_volumes(self, v)),
            ("tmpfs", lambda v: convert_tmpfs(self, v)),
            ("secrets", lambda v: convert_files(self, "secrets", v)),
            ("configs", lambda v: convert_files(self, "configs", v)),
            ("depends_on", self._depends_on),
            ("healthcheck", self._healthcheck),
            ("labels", self._labels),
            ("logging", self._logging),
            ("networks", self._networks),
            ("network_mode", self._network_mode),
            ("user", lambda v: self._copy("user", "user", v)),
            ("working_dir", lambda v: self._copy("working_dir", "work_dir", v)),
            ("hostname", lambda v: self._copy("hostname", "hostname", v)),
            ("cap_add", lambda v: self._caps("cap_add", v)),
            ("cap_drop", lambda v: self._caps("cap_drop", v)),
            ("privileged", self._privileged),
            ("stop_signal", self._stop_signal),
            ("stop_grace_period", self._stop_grace),
            ("platform", self._platform),
            ("container_name", self._container_name),
        ]
        for key, step in steps:
            if self.given(key) is not None:
                c.attempt(lambda step=step, key=key: step(self.body[key]))  # type: ignore[misc]
        if "kill_timeout" not in self.task:
            self.task["kill_timeout"] = STOP_GRACE_DEFAULT
        c.attempt(self._restart_and_deploy)
        if self.env:
            self.task["env"] = self.env
        if self.mounts:
            self.config["mounts"] = self.mounts
        self._network_config()
        self._catalog()
        labels = self.config.setdefault("labels", {})
        labels[LABEL_PROJECT] = self.shared.project
        labels[LABEL_SERVICE] = self.name
        return self

    def _catalog(self) -> None:
        """A service that publishes a port is registered in Podium's service catalog as
        ``<project>-<service>`` on its first port, so other nodes find it through the
        catalog's DNS (``shop-db.service.podium``); the project network only spans a node."""
        # Only a port other nodes can reach: one bound to loopback is the node's alone.
        published = self.config.get("ports") or {}
        ports = [
            label
            for label, port in published.items()
            if not str(port.get("host_ip") or "").startswith(_LOOPBACK)
        ]
        if not ports:
            return
        name = catalog_name(self.shared.project, self.name)
        if name is None:
            self.c.warn(
                f"service {self.name!r} is not registered in the service catalog: "
                f"'{self.shared.project}-{self.name}' cannot be a DNS name (at most 63 characters)"
            )
            return
        self.group["services"] = [{"name": name, "port": ports[0], "tags": ["compose"]}]

    def _network_config(self) -> None:
        """The Docker networks the container joins: each of the service's networks (the
        project's ``default`` when it names none, as Compose does), with the service's
        name as an alias on each, so the project's containers on a node find it by name."""
        if "network_mode" in self.config:  # host, none, bridge: no project networks
            return
        entries = self.network_entries or {"default": {}}
        order = sorted(entries, key=lambda n: -int(entries[n].get("priority") or 0))
        networks = []
        for name in order:
            docker_name = self.shared.network_names.get(name)
            if docker_name is None:  # not declared: reported by _networks
                continue
            aliases = [self.name, *entries[name].get("aliases", [])]
            networks.append({"name": docker_name, "aliases": list(dict.fromkeys(aliases))})
        if networks:
            self.config["networks"] = networks

    # -- fields -------------------------------------------------------------------------

    def _image(self) -> None:
        """``image:``, or the image ``build:`` makes (``<project>-<service>`` unless
        ``image:`` names it, as Compose tags it), and how the nodes get it."""
        c, image, build = self.c, self.given("image"), self.given("build")
        if image is not None:
            image = c.string(self.at("image"), image)
        policy = self._pull_policy()
        if build is not None:
            name = image or default_image(self.shared.project, self.name)
            self.build = parse_build(c, self.at("build"), self.name, build, name, policy == "build")
            self.config["image"] = name
            # Built here, not pulled: a node without it says so instead of pulling a
            # namesake from a registry (compose up --push REGISTRY makes it pullable).
            self.config["image_pull"] = "never" if policy in (None, "build") else policy
            return
        if image is None:
            what = (
                "image: is empty"
                if "image" in self.body
                else f"service {self.name!r} has no image:"
            )
            c.fail(
                self.at() if "image" not in self.body else self.at("image"),
                what,
                "add image: NAME[:TAG] (or build: DIR)",
                key="image" not in self.body,
            )
        if policy == "build":
            c.fail(
                self.at("pull_policy"),
                "pull_policy: build needs a build: section to build from",
                "add build: DIR, or use missing or always",
            )
        self.config["image"] = image
        if policy is not None:
            self.config["image_pull"] = policy

    def _pull_policy(self) -> str | None:
        """``pull_policy`` as the docker driver's ``image_pull`` (``build`` kept as is)."""
        c = self.c
        value = self.given("pull_policy")
        if value is None:
            return None
        policy = c.string(self.at("pull_policy"), value, numbers=False)
        mapped = {
            "always": "always",
            "never": "never",
            "missing": "if_not_present",
            "if_not_present": "if_not_present",
            "build": "build",
        }
        if policy not in mapped:
            if policy in ("daily", "weekly") or policy.startswith("every_"):
                c.warn(
                    f"service {self.name!r}: pull_policy {policy!r} is treated as missing "
                    "(the docker driver does not keep pull times)"
                )
                return "if_not_present"
            c.fail(
                self.at("pull_policy"),
                f"unknown pull_policy {policy!r}",
                "use always, missing, never or build",
            )
        return mapped[policy]

    def _split(self, key: str, value: object) -> list[str]:
        c = self.c
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as exc:
                c.fail(self.at(key), f"cannot split {value!r} into words: {exc}")
        if isinstance(value, list):
            return [c.string(self.at(key, i), v) for i, v in enumerate(value)]
        c.fail(self.at(key), f"expected a string or a list of strings, got {describe(value)}")

    def _command(self, value: object) -> None:
        words = self._split("command", value)
        if words:
            self.config["command"] = words[0]
            if words[1:]:
                self.config["args"] = words[1:]

    def _entrypoint(self, value: object) -> None:
        self.config["entrypoint"] = self._split("entrypoint", value)

    def _env_value(self, path: PathKey, value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return self.c.string(path, value)

    def _environment(self, value: object) -> None:
        c = self.c
        if isinstance(value, dict):
            for k, v in value.items():
                key = str(k)
                if v is None:  # KEY: with no value takes it from the environment
                    if key in c.env:
                        self.env[key] = c.env[key]
                    continue
                with contextlib.suppress(Skip):
                    self.env[key] = self._env_value(self.at("environment", k), v)
            return
        for i, item in enumerate(c.strings(self.at("environment"), value)):
            key, eq, val = item.partition("=")
            if not key:
                c.err(self.at("environment", i), f"{item!r} is not KEY=VALUE")
            elif eq:
                self.env[key] = val
            elif key in c.env:
                self.env[key] = c.env[key]

    def _env_file(self, value: object) -> None:
        c = self.c
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            path = self.at("env_file", i) if isinstance(value, list) else self.at("env_file")
            required = True
            if isinstance(item, dict):
                required = c.boolean((*path, "required"), item.get("required", True))
                item = item.get("path")
            file = c.string(path, item, numbers=False)
            full = Path(c.local_path(file))
            if not full.is_file():
                if required:
                    c.err(path, f"env_file {file!r} does not exist ({full})")
                continue
            try:
                text = full.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                c.err(path, f"cannot read env_file {file!r}: {exc}")
                continue
            values, problems = parse_dotenv(text, c.env)
            for p in problems:
                c.err(path, f"{file}:{p.line}: {p.message}")
            self.env.update(values)

    def _ports(self, value: object) -> None:
        c = self.c
        if not isinstance(value, list):
            c.fail(self.at("ports"), f"expected a list of ports, got {describe(value)}")
        specs: list[tuple[PathKey, PortSpec, str]] = []
        for i, item in enumerate(value):
            path = self.at("ports", i)
            try:
                if isinstance(item, dict):
                    specs.append((path, *self._long_port(path, item)))
                else:
                    specs.append((path, c.parsed(path, parse_port, item), "host"))
            except Skip:
                continue
        network: dict[str, dict[str, int]] = {}
        protocols: dict[str, set[str]] = {}
        published: dict[str, dict[str, Any]] = {}
        record: list[dict[str, Any]] = []
        seen: dict[tuple[int, int | None, str], str] = {}
        statics: dict[int, PathKey] = {}
        for path, spec, mode in specs:
            if spec.host_ip and not _is_ip(spec.host_ip):
                c.err(path, f"host IP {spec.host_ip!r} is not an IP address (127.0.0.1, ::1)")
                continue
            # One label per container port, host port and address; 53:53/tcp and
            # 53:53/udp share it, and the label publishes both protocols.
            key = (spec.target, spec.published, spec.host_ip)
            label = seen.get(key)
            if label is None:
                if spec.published is not None and spec.published in statics:
                    c.err(
                        path,
                        f"host port {spec.published} is published twice: Podium holds a host "
                        "port once per node, whatever the address",
                    )
                    continue
                label = port_label(spec.target, set(published))
                seen[key] = label
                # No address written: every interface, as `docker compose` publishes it.
                published[label] = {"target": spec.target, "host_ip": spec.host_ip}
                protocols[label] = set()
                network[label] = {"static": spec.published} if spec.published else {}
                if spec.published is not None:
                    statics[spec.published] = path
            protocols[label].add(spec.protocol)
            entry: dict[str, Any] = {
                "label": label,
                "target": spec.target,
                "protocol": spec.protocol,
            }
            if spec.published is not None:
                entry["published"] = spec.published
            if spec.host_ip:
                entry["host_ip"] = spec.host_ip
            if mode != "host":
                entry["mode"] = mode
                if mode == "ingress":
                    c.warn(
                        f"service {self.name!r}: port {spec.target} mode: ingress publishes on "
                        "the node that runs each replica (there is no routing mesh)"
                    )
            record.append(entry)
        for label, port in published.items():
            if len(protocols[label]) == 1:
                port["protocol"] = next(iter(protocols[label]))
        if network:
            self.group["network"] = {"ports": network}
            self.config["ports"] = published
            self.meta[f"{META_PREFIX}ports"] = meta_json(record)

    def _long_port(self, path: PathKey, item: dict[str, Any]) -> tuple[PortSpec, str]:
        c = self.c
        allowed = ("target", "published", "host_ip", "protocol", "mode", "name", "app_protocol")
        for k in item:
            if k not in allowed:
                close = suggest(str(k), list(allowed))
                c.err(
                    (*path, k),
                    f"unknown port field {k!r}",
                    f"did you mean {close!r}?" if close else None,
                    key=True,
                )
        if "target" not in item:
            c.fail(path, "a port needs target: (the container's port)")
        target = c.integer((*path, "target"), item["target"], 1)
        published = None
        if item.get("published") not in (None, ""):
            text = c.string((*path, "published"), item["published"])
            published = c.parsed(
                (*path, "published"), lambda t: parse_port(f"{t}:1").published, text
            )
        protocol = c.string((*path, "protocol"), item.get("protocol") or "tcp").lower()
        if protocol not in ("tcp", "udp"):
            c.fail((*path, "protocol"), f"unknown protocol {protocol!r}: use tcp or udp")
        host_ip = c.string((*path, "host_ip"), item.get("host_ip") or "")
        mode = c.string((*path, "mode"), item.get("mode") or "host")
        if mode not in ("host", "ingress"):
            c.fail((*path, "mode"), f"unknown port mode {mode!r}: use host or ingress")
        if target > 65535:
            c.fail((*path, "target"), f"container port {target} is out of range (1-65535)")
        return PortSpec(target, published, host_ip, protocol), mode

    def _expose(self, value: object) -> None:
        ports = self.c.strings(self.at("expose"), value)
        self.meta[f"{META_PREFIX}expose"] = meta_json(ports)

    def _depends_on(self, value: object) -> None:
        c = self.c
        if isinstance(value, list):
            for i, item in enumerate(value):
                with contextlib.suppress(Skip):
                    dep = c.string(self.at("depends_on", i), item, numbers=False)
                    self.depends_on[dep] = "service_started"
                    self.depends_paths[dep] = self.at("depends_on", i)
        elif isinstance(value, dict):
            for dep, spec in value.items():
                path = self.at("depends_on", dep)
                try:
                    body = c.mapping(path, spec)
                    for key in body:
                        if key not in DEPENDS_KEYS:
                            close = suggest(str(key), list(DEPENDS_KEYS))
                            c.err(
                                (*path, key),
                                f"unknown depends_on field {key!r}",
                                f"did you mean {close!r}?"
                                if close
                                else "a dependency takes condition, restart and required",
                                key=True,
                            )
                    condition = c.string(
                        (*path, "condition"), body.get("condition") or "service_started"
                    )
                    if condition not in DEPENDS_CONDITIONS:
                        close = suggest(condition, list(DEPENDS_CONDITIONS))
                        c.fail(
                            (*path, "condition"),
                            f"unknown condition {condition!r}",
                            f"did you mean {close!r}?"
                            if close
                            else "use " + ", ".join(DEPENDS_CONDITIONS),
                        )
                    self.depends_on[str(dep)] = condition
                    self.depends_paths[str(dep)] = path
                    if self.given("required", body) is not None and not c.boolean(
                        (*path, "required"), body["required"]
                    ):
                        self.depends_optional.add(str(dep))
                    if self.given("restart", body) is not None and c.boolean(
                        (*path, "restart"), body["restart"]
                    ):
                        c.warn(
                            f"service {self.name!r}: depends_on.{dep}.restart: true is not "
                            f"honoured: Podium does not restart {self.name!r} when {dep!r} is "
                            "restarted or updated (it only orders the first start)"
                        )
                except Skip:
                    continue
        else:
            c.fail(
                self.at("depends_on"),
                f"expected a list or a mapping of services, got {describe(value)}",
            )
        if self.name in self.depends_on:
            c.err(
                self.depends_paths.pop(self.name, self.at("depends_on")),
                f"service {self.name!r} depends on itself",
            )
            del self.depends_on[self.name]
        if self.depends_on:
            self.meta[f"{META_PREFIX}depends_on"] = meta_json(self.depends_on)

    def _healthcheck(self, value: object) -> None:
        c = self.c
        body = c.mapping(self.at("healthcheck"), value)
        check: dict[str, Any] = {}
        test = body.get("test")
        if body.get("disable") is True:
            test = ["NONE"]
        if isinstance(test, str):
            check["test"] = ["CMD-SHELL", test]
        elif isinstance(test, list) and test:
            words = [c.string(self.at("healthcheck", "test", i), w) for i, w in enumerate(test)]
            if words[0] not in ("CMD", "CMD-SHELL", "NONE"):
                c.fail(
                    self.at("healthcheck", "test"),
                    f"a healthcheck test list starts with CMD, CMD-SHELL or NONE, not {words[0]!r}",
                    'e.g. ["CMD", "curl", "-f", "http://localhost/"]',
                )
            check["test"] = words
        elif test is not None:
            c.fail(
                self.at("healthcheck", "test"), f"expected a string or a list, got {describe(test)}"
            )
        for key in ("interval", "timeout", "start_period", "start_interval"):
            if self.given(key, body) is not None:
                check[key] = c.duration(self.at("healthcheck", key), body[key])
        if self.given("retries", body) is not None:
            check["retries"] = c.integer(self.at("healthcheck", "retries"), body["retries"])
        known = {
            "test",
            "disable",
            "interval",
            "timeout",
            "start_period",
            "start_interval",
            "retries",
        }
        for key in body:
            if key not in known:
                c.err(self.at("healthcheck", key), f"unknown healthcheck field {key!r}", key=True)
        self.meta[f"{META_PREFIX}healthcheck"] = meta_json(check)
        if check.get("start_interval"):
            c.warn(
                f"service {self.name!r}: healthcheck.start_interval was ignored "
                "(the interval applies from the start)"
            )
        config: dict[str, Any] = {"test": check.get("test", [])}
        if config["test"] != ["NONE"]:
            for key in ("interval", "timeout", "start_period"):
                if check.get(key):
                    config[key] = format_duration(check[key])  # as a job file writes it
            if check.get("retries"):
                config["retries"] = check["retries"]
        self.config["healthcheck"] = config
        self.has_healthcheck = config["test"] != ["NONE"]

    def _label_map(self, path: PathKey, value: object) -> dict[str, str]:
        c = self.c
        if isinstance(value, dict):
            return {
                str(k): ("" if v is None else self._env_value((*path, k), v))
                for k, v in value.items()
            }
        out: dict[str, str] = {}
        for item in c.strings(path, value):
            key, _, val = item.partition("=")
            out[key] = val
        return out

    def _labels(self, value: object) -> None:
        self.config["labels"] = self._label_map(self.at("labels"), value)

    def _logging(self, value: object) -> None:
        c = self.c
        body = c.mapping(self.at("logging"), value)
        driver = self.given("driver", body)
        if driver not in (None, "json-file", "local"):
            c.warn(
                f"service {self.name!r}: logging driver {driver!r} was ignored; Podium keeps "
                "each task's logs on its node (podium alloc logs)"
            )
        options = c.mapping(self.at("logging", "options"), body.get("options"))
        logs: dict[str, int] = {}
        if self.given("max-size", options) is not None:
            logs["max_file_size"] = c.parsed(
                self.at("logging", "options", "max-size"), size_mb, options["max-size"]
            )
        if self.given("max-file", options) is not None:
            logs["max_files"] = c.integer(
                self.at("logging", "options", "max-file"), options["max-file"], 1
            )
        if logs:
            self.task["logs"] = logs

    def _networks(self, value: object) -> None:
        c = self.c
        record: dict[str, Any] = {}
        if isinstance(value, list):
            for i, item in enumerate(value):
                record[c.string(self.at("networks", i), item, numbers=False)] = {}
            paths = {name: self.at("networks", i) for i, name in enumerate(record)}
        else:
            for name, spec in c.mapping(self.at("networks"), value).items():
                body = c.mapping(self.at("networks", name), spec)
                entry: dict[str, Any] = {}
                if body.get("aliases") is not None:
                    entry["aliases"] = c.strings(
                        self.at("networks", name, "aliases"), body["aliases"]
                    )
                if body.get("priority") is not None:
                    entry["priority"] = c.integer(
                        self.at("networks", name, "priority"), body["priority"], -(2**31)
                    )
                for k in body:
                    if k in _NETWORK_ENTRY_KEYS:
                        continue
                    if k in _NETWORK_ENTRY_IGNORED:
                        if body[k] is not None:
                            entry[k] = body[k]
                            c.warn(
                                f"service {self.name!r}: networks.{name}.{k} is not supported "
                                "yet and was ignored (Docker assigns addresses on each node)"
                            )
                        continue
                    known = list(_NETWORK_ENTRY_KEYS + _NETWORK_ENTRY_IGNORED)
                    close = suggest(str(k), known)
                    c.err(
                        self.at("networks", name, k),
                        f"unknown service network field {k!r}",
                        f"did you mean {close!r}?" if close else None,
                        key=True,
                    )
                record[name] = entry
            paths = {name: self.at("networks", name) for name in record}
        for name, path in paths.items():
            if name not in self.shared.networks:
                c.err(
                    path,
                    f"service {self.name!r} uses network {name!r}, which is not declared under the top-level networks:",
                    key=isinstance(value, dict),
                )
        if "network_mode" in self.body and self.body["network_mode"] is not None:
            c.fail(
                self.at("networks"), "networks: and network_mode: cannot be used together", key=True
            )
        self.meta[f"{META_PREFIX}networks"] = meta_json(record)
        self.network_entries = record

    def _network_mode(self, value: object) -> None:
        c = self.c
        mode = c.string(self.at("network_mode"), value, numbers=False)
        if mode.startswith(("service:", "container:")):
            c.fail(
                self.at("network_mode"),
                f"network_mode {mode!r} is not supported yet: the containers of two services "
                "may run on different nodes",
                "put both containers' processes in one service, or use a network",
            )
        if mode not in ("host", "bridge", "none", "default"):
            c.fail(
                self.at("network_mode"),
                f"unknown network_mode {mode!r}",
                "use host, bridge or none",
            )
        if mode != "default":
            self.config["network_mode"] = mode

    def _copy(self, key: str, target: str, value: object) -> None:
        self.config[target] = self.c.string(self.at(key), value)

    def _caps(self, key: str, value: object) -> None:
        self.config[key] = self.c.strings(self.at(key), value)

    def _privileged(self, value: object) -> None:
        self.config["privileged"] = self.c.boolean(self.at("privileged"), value)

    def _stop_signal(self, value: object) -> None:
        self.task["kill_signal"] = self.c.string(self.at("stop_signal"), value, numbers=False)

    def _stop_grace(self, value: object) -> None:
        self.task["kill_timeout"] = self.c.duration(self.at("stop_grace_period"), value)

    def _platform(self, value: object) -> None:
        """``os[/arch[/variant]]`` → constraints on the node's kernel and CPU architecture;
        text that names neither is a warning, not a constraint nothing could meet."""
        c = self.c
        text = c.string(self.at("platform"), value, numbers=False)
        parsed = parse_platform(text)
        if parsed is None:
            c.warn(
                f"service {self.name!r}: platform {text!r} names no known OS/architecture "
                "(linux/amd64, linux/arm64...); no placement constraint was made from it"
            )
            return
        os_name, arch, variant = parsed
        constraints = self.group.setdefault("constraints", [])
        constraints.append({"attribute": "${attr.kernel.name}", "operator": "=", "value": os_name})
        if arch is not None:
            constraints.append({"attribute": "${attr.cpu.arch}", "operator": "=", "value": arch})
        if variant is not None:
            c.warn(
                f"service {self.name!r}: platform variant {variant!r} is not a node attribute; "
                f"only {os_name}/{arch} constrains the placement"
            )

    def _container_name(self, value: object) -> None:
        self.c.warn(
            f"service {self.name!r}: container_name: was ignored; Podium names each "
            "allocation's container itself"
        )

    # -- restart, deploy ----------------------------------------------------------------

    def _restart_and_deploy(self) -> None:
        c = self.c
        deploy: dict[str, Any] = {}
        if self.body.get("deploy") is not None:
            deploy = c.mapping(self.at("deploy"), self.body["deploy"])
        for key in deploy:
            if key not in DEPLOY_KEYS:
                close = suggest(key, list(DEPLOY_KEYS))
                c.err(
                    self.at("deploy", key),
                    f"unknown deploy key {key!r}",
                    f"did you mean {close!r}?" if close else None,
                    key=True,
                )
        mode = self.given("mode", deploy) or "replicated"
        if mode not in ("replicated", "global"):
            c.err(
                self.at("deploy", "mode"),
                f"deploy mode {mode!r} is not supported yet",
                "use replicated or global (jobs that run to completion arrive later)",
            )
        self.is_global = mode == "global"
        c.attempt(lambda: self._count(deploy))
        c.attempt(lambda: self._resources(deploy))
        c.attempt(lambda: self._restart(deploy))
        c.attempt(lambda: self._placement(deploy))
        for key in ("update_config", "rollback_config"):
            if deploy.get(key) is not None:
                self.meta[f"{META_PREFIX}{key}"] = meta_json(
                    c.mapping(self.at("deploy", key), deploy[key])
                )
        if deploy.get("labels") is not None:
            self.meta[f"{META_PREFIX}deploy_labels"] = meta_json(
                self._label_map(self.at("deploy", "labels"), deploy["labels"])
            )
        if deploy.get("endpoint_mode") is not None:
            self.meta[f"{META_PREFIX}endpoint_mode"] = str(deploy["endpoint_mode"])

    def _count(self, deploy: dict[str, Any]) -> None:
        c = self.c
        if self.is_global:
            if self.given("replicas", deploy) is not None:
                c.fail(self.at("deploy", "replicas"), "replicas: cannot be used with mode: global")
            return
        if self.given("replicas", deploy) is not None:
            self.group["count"] = c.integer(self.at("deploy", "replicas"), deploy["replicas"])
        elif self.given("scale") is not None:
            self.group["count"] = c.integer(self.at("scale"), self.body["scale"])

    def _resources(self, deploy: dict[str, Any]) -> None:
        """Reservations → what the scheduler reserves (``memory``, ``cpu``), limits → the
        hard limits (``memory_max``, ``cpu_max``).  A limit alone is also the reservation
        (Kubernetes' rule: requests default to limits); nothing written is no limit and
        Podium's default reservation, as a container under Compose has no limit either."""
        c = self.c
        base = self.at("deploy", "resources")
        res = c.mapping(base, deploy.get("resources"))
        for key in res:
            if key not in ("limits", "reservations"):
                c.err((*base, key), f"unknown resources key {key!r}", key=True)
        limits = c.mapping((*base, "limits"), res.get("limits"))
        reserved = c.mapping((*base, "reservations"), res.get("reservations"))
        self._resource_keys(limits, (*base, "limits"), ("cpus", "memory", "pids"))
        self._resource_keys(
            reserved,
            (*base, "reservations"),
            ("cpus", "memory", "devices", "generic_resources"),
        )
        mem_max = self._one_value("mem_limit", limits, (*base, "limits"), "memory", size_mb, "MB")
        mem = self._one_value(
            "mem_reservation", reserved, (*base, "reservations"), "memory", size_mb, "MB"
        )
        cpu_max = self._one_value("cpus", limits, (*base, "limits"), "cpus", cpus_mhz, "MHz")
        cpu = self._one_value(None, reserved, (*base, "reservations"), "cpus", cpus_mhz, "MHz")
        for what, want, limit, unit in (
            ("memory", mem, mem_max, "MB"),
            ("cpus", cpu, cpu_max, "MHz"),
        ):
            if want is not None and limit is not None and want[0] > limit[0]:
                c.err(
                    want[1],
                    f"the {what} reservation ({want[0]} {unit}) is above the limit "
                    f"({limit[0]} {unit}): the limit cannot be smaller than what is reserved",
                )
        resources: dict[str, int] = {}
        for key, value in (
            ("memory", mem or mem_max),
            ("memory_max", mem_max),
            ("cpu", cpu or cpu_max),
            ("cpu_max", cpu_max),
        ):
            if value is not None:
                resources[key] = value[0]
        if resources:
            self.task["resources"] = resources
        if limits.get("pids") not in (None, ""):
            c.warn(f"service {self.name!r}: deploy.resources.limits.pids was ignored")
        for key in ("devices", "generic_resources"):
            if reserved.get(key) is not None:
                c.warn(f"service {self.name!r}: deploy.resources.reservations.{key} was ignored")

    def _resource_keys(self, body: dict[str, Any], path: PathKey, known: tuple[str, ...]) -> None:
        for key in body:
            if key not in known:
                close = suggest(key, list(known))
                self.c.err(
                    (*path, key),
                    f"unknown resources key {key!r}",
                    f"did you mean {close!r}?" if close else None,
                    key=True,
                )

    def _one_value(
        self,
        service_key: str | None,
        section: dict[str, Any],
        section_path: PathKey,
        key: str,
        parse: Callable[[object], int],
        unit: str,
    ) -> tuple[int, PathKey] | None:
        """A figure written at the service level (``mem_limit``) or under ``deploy``
        (``limits.memory``), parsed, with where it was written; both given and distinct
        is an error, as in Compose."""
        c = self.c
        found: list[tuple[int, PathKey]] = []
        for path, raw in (
            (self.at(service_key) if service_key else None, self.given(service_key or "")),
            ((*section_path, key), self.given(key, section)),
        ):
            if raw is None or path is None:
                continue
            with contextlib.suppress(Skip):
                found.append((c.parsed(path, parse, raw), path))
        if len(found) == 2 and found[0][0] != found[1][0]:
            c.err(
                found[1][1],
                f"{service_key} ({found[0][0]} {unit}) and deploy.resources."
                f"{section_path[-1]}.{key} ({found[1][0]} {unit}) differ: write one of them",
            )
        return found[-1] if found else None

    def _restart(self, deploy: dict[str, Any]) -> None:
        c = self.c
        policy_raw = deploy.get("restart_policy")
        if policy_raw is not None:
            policy = c.mapping(self.at("deploy", "restart_policy"), policy_raw)
            p = self.at("deploy", "restart_policy")
            for key in policy:
                if key not in ("condition", "delay", "max_attempts", "window"):
                    c.err((*p, key), f"unknown restart_policy key {key!r}", key=True)
            condition = c.string((*p, "condition"), policy.get("condition") or "any")
            if condition not in ("none", "on-failure", "any"):
                c.fail(
                    (*p, "condition"),
                    f"unknown condition {condition!r}",
                    "use none, on-failure or any",
                )
            attempts = None
            if self.given("max_attempts", policy) is not None:
                attempts = c.integer((*p, "max_attempts"), policy["max_attempts"])
            if condition == "none":
                self._no_restart()
            elif attempts is not None:
                self.group["restart"] = {
                    "attempts": attempts,
                    "interval": RESTART_COUNTED_INTERVAL,
                    "delay": 5.0,
                    "mode": "fail",
                }
            else:
                self.group["restart"] = dict(RESTART_ALWAYS)
            if self.given("delay", policy) is not None and condition != "none":
                self.group["restart"]["delay"] = c.duration((*p, "delay"), policy["delay"])
            if self.given("window", policy) is not None:
                self.meta[f"{META_PREFIX}restart_window"] = str(
                    c.duration((*p, "window"), policy["window"])
                )
            return
        if self.given("restart") is None:
            # Compose's default is "no": a container that exits stays exited.
            self._no_restart()
            return
        text = c.string(self.at("restart"), self.body["restart"], numbers=False)
        if text == "no":
            self._no_restart()
        elif text in ("always", "unless-stopped", "on-failure"):
            self.group["restart"] = dict(RESTART_ALWAYS)
        elif text.startswith("on-failure:") and text[11:].isdigit():
            self.group["restart"] = {
                "attempts": int(text[11:]),
                "interval": RESTART_COUNTED_INTERVAL,
                "delay": 5.0,
                "mode": "fail",
            }
        else:
            c.fail(
                self.at("restart"),
                f"unknown restart policy {text!r}",
                'use "no", always, unless-stopped, on-failure or on-failure:N (quote "no": bare no is fine in YAML 1.2)',
            )

    def _no_restart(self) -> None:
        """Never restarted on its node nor placed again elsewhere: an allocation whose
        task exits (0 or not) ends failed, and ``compose up`` starts it again."""
        self.group["restart"] = {"attempts": 0, "mode": "fail"}
        self.group["reschedule"] = {"attempts": 0, "unlimited": False}

    def _placement(self, deploy: dict[str, Any]) -> None:
        c = self.c
        placement = c.mapping(self.at("deploy", "placement"), deploy.get("placement"))
        p = self.at("deploy", "placement")
        for key in placement:
            if key not in ("constraints", "preferences", "max_replicas_per_node"):
                c.err((*p, key), f"unknown placement key {key!r}", key=True)
        if placement.get("constraints") is not None:
            out = self.group.setdefault("constraints", [])
            for i, text in enumerate(c.strings((*p, "constraints"), placement["constraints"])):
                try:
                    rule = c.parsed((*p, "constraints", i), parse_constraint, text)
                except Skip:
                    continue
                if rule is not None:
                    out.append(rule)
        if placement.get("preferences") is not None:
            prefs = placement["preferences"]
            if not isinstance(prefs, list):
                c.fail((*p, "preferences"), f"expected a list, got {describe(prefs)}")
            spread = []
            for i, pref in enumerate(prefs):
                body = c.mapping((*p, "preferences", i), pref)
                if "spread" not in body:
                    c.err(
                        (*p, "preferences", i),
                        "a placement preference is spread: node.labels.<key>",
                    )
                    continue
                text = c.string((*p, "preferences", i, "spread"), body["spread"], numbers=False)
                try:
                    spread.append(
                        {
                            "attribute": c.parsed(
                                (*p, "preferences", i, "spread"), parse_spread, text
                            )
                        }
                    )
                except Skip:
                    continue
            if spread:
                self.group["spread"] = spread
        if placement.get("max_replicas_per_node") is not None:
            self.group["max_per_node"] = c.integer(
                (*p, "max_replicas_per_node"), placement["max_replicas_per_node"], 1
            )
