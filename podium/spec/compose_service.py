"""One Compose service → one Podium group of one ``docker`` task.

See ``docs/compose.md`` for the table of what maps to what; fields Podium
cannot honour yet are either refused with a reason (``build:`` without an
``image:``, ``extends:``) or recorded under ``compose.*`` group meta keys for
the issues that will use them (health checks, update_config, networks).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from podium.models.duration import format_duration
from podium.spec.compose_context import META_PREFIX, Context, Shared, Skip, meta_json
from podium.spec.compose_env import parse_dotenv
from podium.spec.compose_values import (
    PortSpec,
    VolumeSpec,
    catalog_name,
    cpus_mhz,
    is_path,
    parse_constraint,
    parse_port,
    parse_spread,
    parse_volume,
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
)
_SERVICE_REFUSED = {
    "extends": "extends: is not supported yet: copy the fields of the base service in",
    "profiles": "profiles: are not supported yet: remove the service, or its profiles: line",
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
        self.env: dict[str, str] = {}
        self.mounts: list[dict[str, Any]] = []
        self.network_entries: dict[str, dict[str, Any]] = {}

    def at(self, *parts: object) -> PathKey:
        return (*self.path, *parts)

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
        self._image()
        steps: list[tuple[str, Callable[[Any], None]]] = [
            ("command", self._command),
            ("entrypoint", self._entrypoint),
            ("env_file", self._env_file),
            ("environment", self._environment),
            ("ports", self._ports),
            ("expose", self._expose),
            ("volumes", self._volumes),
            ("tmpfs", self._tmpfs),
            ("secrets", lambda v: self._files("secrets", v)),
            ("configs", lambda v: self._files("configs", v)),
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
            ("pull_policy", self._pull_policy),
            ("platform", self._platform),
            ("container_name", self._container_name),
        ]
        for key, step in steps:
            if key in self.body and self.body[key] is not None:
                c.attempt(lambda step=step, key=key: step(self.body[key]))  # type: ignore[misc]
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
        ports = (self.group.get("network") or {}).get("ports") or {}
        if not ports:
            return
        name = catalog_name(self.shared.project, self.name)
        if name is None:
            self.c.warn(
                f"service {self.name!r} is not registered in the service catalog: "
                f"'{self.shared.project}-{self.name}' cannot be a DNS name (at most 63 characters)"
            )
            return
        self.group["services"] = [{"name": name, "port": next(iter(ports)), "tags": ["compose"]}]

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
        c, image, build = self.c, self.body.get("image"), self.body.get("build")
        if build is not None and not image:
            c.err(
                self.at("build"),
                f"service {self.name!r} uses build:, which a cluster that runs images cannot "
                "honour: build and tag the image first (docker build -t NAME .), push it to a "
                "registry the nodes can pull from (or load it on each node), and set image: NAME",
                key=True,
            )
            return
        if build is not None:
            c.warn(
                f"service {self.name!r}: build: was ignored; the nodes pull image {image!r}, "
                "so build and push it first"
            )
        if image is None:
            c.err(
                self.at(), f"service {self.name!r} has no image:", "add image: NAME[:TAG]", key=True
            )
            return
        c.attempt(lambda: self.config.__setitem__("image", c.string(self.at("image"), image)))
        if self.config.get("image") == "":
            c.err(self.at("image"), "image: must not be empty")

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
        labels: dict[str, int] = {}
        record: list[dict[str, Any]] = []
        seen: dict[tuple[int, int | None, str], str] = {}
        statics: dict[int, PathKey] = {}
        for path, spec, mode in specs:
            # The docker driver publishes each label on tcp and udp alike, so
            # 53:53/tcp and 53:53/udp are one label.
            key = (spec.target, spec.published, spec.host_ip)
            label = seen.get(key)
            if label is None:
                if spec.published is not None and spec.published in statics:
                    c.err(path, f"host port {spec.published} is published twice")
                    continue
                label = port_label(spec.target, set(labels))
                seen[key] = label
                labels[label] = spec.target
                network[label] = {"static": spec.published} if spec.published else {}
                if spec.published is not None:
                    statics[spec.published] = path
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
            record.append(entry)
        if network:
            self.group["network"] = {"ports": network}
            self.config["ports"] = labels
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
        protocol = c.string((*path, "protocol"), item.get("protocol", "tcp")).lower()
        if protocol not in ("tcp", "udp"):
            c.fail((*path, "protocol"), f"unknown protocol {protocol!r}: use tcp or udp")
        host_ip = c.string((*path, "host_ip"), item.get("host_ip", ""))
        mode = c.string((*path, "mode"), item.get("mode", "host"))
        if target > 65535:
            c.fail((*path, "target"), f"container port {target} is out of range (1-65535)")
        return PortSpec(target, published, host_ip, protocol), mode

    def _expose(self, value: object) -> None:
        ports = self.c.strings(self.at("expose"), value)
        self.meta[f"{META_PREFIX}expose"] = meta_json(ports)

    def _volumes(self, value: object) -> None:
        c = self.c
        if not isinstance(value, list):
            c.fail(self.at("volumes"), f"expected a list of volumes, got {describe(value)}")
        for i, item in enumerate(value):
            path = self.at("volumes", i)
            try:
                if isinstance(item, dict):
                    spec = self._long_volume(path, item)
                else:
                    spec = c.parsed(path, parse_volume, c.string(path, item, numbers=False))
                self._mount(path, spec)
            except Skip:
                continue

    def _long_volume(self, path: PathKey, item: dict[str, Any]) -> VolumeSpec:
        c = self.c
        kind = c.string((*path, "type"), item.get("type", "volume"))
        if kind not in ("volume", "bind", "tmpfs"):
            c.fail(
                (*path, "type"), f"volume type {kind!r} is not supported: use volume, bind or tmpfs"
            )
        if "target" not in item:
            c.fail(path, "a volume needs target: (the path in the container)")
        target = c.string((*path, "target"), item["target"], numbers=False)
        source = item.get("source")
        if source is not None:
            source = c.string((*path, "source"), source, numbers=False)
        read_only = c.boolean((*path, "read_only"), item.get("read_only", False))
        if kind == "bind" and not source:
            c.fail(path, "a bind volume needs source: (a path on the node)")
        return VolumeSpec(kind, target, source, read_only)

    def _mount(self, path: PathKey, spec: VolumeSpec) -> None:
        c = self.c
        mount: dict[str, Any] = {"type": spec.type, "target": spec.target}
        if spec.read_only:
            mount["readonly"] = True
        if spec.type == "bind":
            assert spec.source is not None
            mount["source"] = c.local_path(spec.source)
        elif spec.type == "volume" and spec.source:
            if is_path(spec.source):
                mount["type"] = "bind"
                mount["source"] = c.local_path(spec.source)
            elif spec.source not in self.shared.volumes:
                declared = list(self.shared.volumes)
                close = suggest(spec.source, declared)
                c.fail(
                    path,
                    f"service {self.name!r} uses volume {spec.source!r}, which is not declared "
                    "under the top-level volumes:",
                    f"did you mean {close!r}?"
                    if close
                    else f"add volumes: {{{spec.source}: {{}}}}",
                )
            else:
                mount["source"] = self.shared.volumes[spec.source]
        self.mounts.append(mount)

    def _tmpfs(self, value: object) -> None:
        for i, item in enumerate(self.c.strings(self.at("tmpfs"), value)):
            target = item.split(":", 1)[0]
            if not target.startswith("/"):
                path = self.at("tmpfs", i) if isinstance(value, list) else self.at("tmpfs")
                self.c.fail(path, f"tmpfs {item!r}: the container path must be absolute")
            self.mounts.append({"type": "tmpfs", "target": target})

    def _files(self, kind: str, value: object) -> None:
        c = self.c
        if not isinstance(value, list):
            c.fail(self.at(kind), f"expected a list of {kind}, got {describe(value)}")
        table = self.shared.secrets if kind == "secrets" else self.shared.configs
        declared = set(c.data.get(kind) or {}) if isinstance(c.data.get(kind), dict) else set()
        for i, item in enumerate(value):
            path = self.at(kind, i)
            try:
                if isinstance(item, dict):
                    source = c.string((*path, "source"), item.get("source"), numbers=False)
                    target = item.get("target")
                    target = None if target is None else c.string((*path, "target"), target)
                else:
                    source, target = c.string(path, item, numbers=False), None
                if source not in table:
                    if source not in declared:
                        c.err(
                            path,
                            f"{kind[:-1]} {source!r} is not declared under the top-level {kind}:",
                        )
                    continue  # a declared one that is not a file had its own error
                if kind == "secrets":
                    where = target or source
                    where = where if where.startswith("/") else f"/run/secrets/{where}"
                else:
                    where = target or f"/{source}"
                self.mounts.append(
                    {"type": "bind", "source": table[source], "target": where, "readonly": True}
                )
            except Skip:
                continue

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
                    condition = c.string(
                        (*path, "condition"), body.get("condition", "service_started")
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
            if body.get(key) is not None:
                check[key] = c.duration(self.at("healthcheck", key), body[key])
        if body.get("retries") is not None:
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
        driver = body.get("driver")
        if driver not in (None, "json-file", "local"):
            c.warn(
                f"service {self.name!r}: logging driver {driver!r} was ignored; Podium keeps "
                "each task's logs on its node (podium alloc logs)"
            )
        options = c.mapping(self.at("logging", "options"), body.get("options"))
        logs: dict[str, int] = {}
        if options.get("max-size") is not None:
            logs["max_file_size"] = c.parsed(
                self.at("logging", "options", "max-size"), size_mb, options["max-size"]
            )
        if options.get("max-file") is not None:
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

    def _pull_policy(self, value: object) -> None:
        c = self.c
        policy = c.string(self.at("pull_policy"), value, numbers=False)
        mapped = {
            "always": "always",
            "never": "never",
            "missing": "if_not_present",
            "if_not_present": "if_not_present",
        }
        if policy == "build":
            c.fail(
                self.at("pull_policy"),
                "pull_policy: build needs a build, which a cluster cannot do",
                "build and push the image, then use missing or always",
            )
        if policy not in mapped:
            if policy in ("daily", "weekly") or policy.startswith("every_"):
                c.warn(f"service {self.name!r}: pull_policy {policy!r} is treated as missing")
                policy = "missing"
            else:
                c.fail(
                    self.at("pull_policy"),
                    f"unknown pull_policy {policy!r}",
                    "use always, missing or never",
                )
        self.config["image_pull"] = mapped[policy]

    def _platform(self, value: object) -> None:
        c = self.c
        text = c.string(self.at("platform"), value, numbers=False)
        parts = text.split("/")
        constraints = self.group.setdefault("constraints", [])
        constraints.append({"attribute": "${attr.os.name}", "operator": "=", "value": parts[0]})
        if len(parts) > 1 and parts[1]:
            constraints.append(
                c.parsed(self.at("platform"), parse_constraint, f"node.platform.arch == {parts[1]}")
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
        mode = deploy.get("mode", "replicated")
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
            if deploy.get("replicas") is not None:
                c.fail(self.at("deploy", "replicas"), "replicas: cannot be used with mode: global")
            return
        if deploy.get("replicas") is not None:
            self.group["count"] = c.integer(self.at("deploy", "replicas"), deploy["replicas"])
        elif self.body.get("scale") is not None:
            self.group["count"] = c.integer(self.at("scale"), self.body["scale"])

    def _resources(self, deploy: dict[str, Any]) -> None:
        c = self.c
        res = c.mapping(self.at("deploy", "resources"), deploy.get("resources"))
        limits = c.mapping(self.at("deploy", "resources", "limits"), res.get("limits"))
        reserved = c.mapping(
            self.at("deploy", "resources", "reservations"), res.get("reservations")
        )
        for key in res:
            if key not in ("limits", "reservations"):
                c.err(
                    self.at("deploy", "resources", key), f"unknown resources key {key!r}", key=True
                )
        cpu = mem = None
        picked: dict[str, tuple[PathKey, Any]] = {}
        for key, alt_key in (("cpus", "cpus"), ("memory", "mem_limit")):
            # Podium enforces a task's resources as hard limits (cgroups, the container's
            # memory limit) and places by the same figures, so a Compose limit is what
            # the task gets; a reservation counts only where no limit is given.
            for path, value in (
                (self.at("deploy", "resources", "limits", key), limits.get(key)),
                (self.at(alt_key), self.body.get(alt_key)),
                (self.at("deploy", "resources", "reservations", key), reserved.get(key)),
                (
                    self.at("mem_reservation"),
                    self.body.get("mem_reservation") if key == "memory" else None,
                ),
            ):
                if value is not None:
                    picked[key] = (path, value)
                    break
        if "cpus" in picked:
            with contextlib.suppress(Skip):
                cpu = c.parsed(picked["cpus"][0], cpus_mhz, picked["cpus"][1])
        if "memory" in picked:
            with contextlib.suppress(Skip):
                mem = c.parsed(picked["memory"][0], size_mb, picked["memory"][1])
        resources: dict[str, int] = {}
        if cpu is not None:
            resources["cpu"] = cpu
        if mem is not None:
            resources["memory"] = mem
        if resources:
            self.task["resources"] = resources
        if reserved and limits:
            record: dict[str, Any] = {}
            if reserved.get("cpus") is not None:
                record["cpu"] = c.parsed(
                    self.at("deploy", "resources", "reservations", "cpus"),
                    cpus_mhz,
                    reserved["cpus"],
                )
            if reserved.get("memory") is not None:
                record["memory"] = c.parsed(
                    self.at("deploy", "resources", "reservations", "memory"),
                    size_mb,
                    reserved["memory"],
                )
            self.meta[f"{META_PREFIX}reservations"] = meta_json(record)
        for key in ("devices", "generic_resources"):
            if reserved.get(key) is not None:
                c.warn(f"service {self.name!r}: deploy.resources.reservations.{key} was ignored")

    def _restart(self, deploy: dict[str, Any]) -> None:
        c = self.c
        policy_raw = deploy.get("restart_policy")
        if policy_raw is not None:
            policy = c.mapping(self.at("deploy", "restart_policy"), policy_raw)
            p = self.at("deploy", "restart_policy")
            for key in policy:
                if key not in ("condition", "delay", "max_attempts", "window"):
                    c.err((*p, key), f"unknown restart_policy key {key!r}", key=True)
            condition = c.string((*p, "condition"), policy.get("condition", "any"))
            if condition not in ("none", "on-failure", "any"):
                c.fail(
                    (*p, "condition"),
                    f"unknown condition {condition!r}",
                    "use none, on-failure or any",
                )
            attempts = None
            if policy.get("max_attempts") is not None:
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
            if policy.get("delay") is not None and condition != "none":
                self.group["restart"]["delay"] = c.duration((*p, "delay"), policy["delay"])
            if policy.get("window") is not None:
                self.meta[f"{META_PREFIX}restart_window"] = str(
                    c.duration((*p, "window"), policy["window"])
                )
            return
        if self.body.get("restart") is None:
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
