"""Docker Compose files in, Podium jobs out.

A Compose project becomes **one service job** named after the project, with
**one group per service** (count = replicas, one ``docker`` task named after the
service).  ``deploy.mode: global`` services cannot share that job (a job's type
is ``service`` *or* ``system``), so each becomes a job of its own,
``<project>-<service>``, of type ``system``; :func:`convert_compose` therefore
returns a list, the project's job first.  ``docs/compose.md`` has the full
table of what maps to what and what is only recorded (in ``compose.*`` meta
keys) for features that arrive later.

Services are selected by profiles as Compose selects them: one without
``profiles:`` always, one with them when one of its profiles is active
(``profiles=`` here, else ``COMPOSE_PROFILES`` from the environment or
``.env``; ``*`` activates all).  ``build:`` is read into a
:class:`~podium.spec.compose_build.BuildSpec` per service, for the CLI to build.

Errors are :class:`~podium.errors.SpecError` s like a job file's: every issue at
once, each with the compose file's line and column and a compose path such as
``services.web.ports[0]``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podium.errors import SpecError, SpecIssue
from podium.models.job import NAME_RE, JobSpec
from podium.spec.compose_build import BuildSpec
from podium.spec.compose_context import META_PREFIX, Context, Shared, Skip, meta_json
from podium.spec.compose_env import InterpolationError, Interpolator, parse_dotenv
from podium.spec.compose_service import GROUP_CONDITIONS, ServiceConverter
from podium.spec.compose_values import (
    PROJECT_RE,
    sanitize_project,
)
from podium.spec.locations import PathKey, format_path
from podium.spec.messages import describe, suggest
from podium.spec.validate import sort_issues, validate_job_dict
from podium.spec.yamlsource import load_yaml

COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
"""The files ``docker compose`` looks for, in its order."""

TOP_LEVEL = ("name", "services", "networks", "volumes", "secrets", "configs", "version")
NETWORK_KEYS = (
    "name",
    "external",
    "driver",
    "driver_opts",
    "attachable",
    "enable_ipv4",
    "enable_ipv6",
    "internal",
    "ipam",
    "labels",
)
"""Keys of a top-level network; only ``name`` and ``external`` change what Podium does."""
PROFILE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
"""A profile's name, as Compose accepts it."""
_TOP_REFUSED = {
    "include": "include: is not supported yet: merge the included files into this one",
    "models": "models: is not supported: Podium runs containers, not model runners",
}


@dataclass
class ComposeProject:
    """A converted compose file: its project name, its jobs and what was not converted."""

    name: str
    jobs: list[JobSpec]
    warnings: list[str] = field(default_factory=list)
    source: str | None = None
    builds: dict[str, BuildSpec] = field(default_factory=dict)
    """Services with ``build:``, by name: how to build the image their task runs."""
    profiles: list[str] = field(default_factory=list)
    """The active profiles."""
    disabled: dict[str, list[str]] = field(default_factory=dict)
    """Services left out because none of their profiles is active, with those profiles."""

    @property
    def job_ids(self) -> list[str]:
        return [j.id for j in self.jobs]


def find_compose_file(directory: str | os.PathLike[str] = ".") -> Path | None:
    """The compose file ``docker compose`` would pick in ``directory``, if any."""
    for name in COMPOSE_FILE_NAMES:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    return None


def convert_compose(
    text_or_path: str | os.PathLike[str],
    project: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    source: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    profiles: Sequence[str] = (),
) -> list[JobSpec]:
    """Convert a compose file into Podium jobs; the project's job comes first.

    ``text_or_path`` is the YAML text itself (a ``str``) or the file (a
    ``Path``/``os.PathLike``).  For a file, its ``.env`` is read and relative
    paths resolve against its directory; for text, against ``base_dir`` (default:
    the current directory).  ``env`` is the environment to interpolate from; it
    wins over ``.env``, as the shell does in Compose.  ``profiles`` are the
    active profiles (``--profile``); none given, ``COMPOSE_PROFILES`` names them.
    Raises :class:`SpecError`.
    """
    return convert_compose_project(
        text_or_path, project, env, source=source, base_dir=base_dir, profiles=profiles
    ).jobs


def load_compose_file(
    path: str | os.PathLike[str],
    project: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[JobSpec]:
    """Convert the compose file at ``path``, interpolating from ``env`` (default:
    this process's environment) over the ``.env`` file next to it."""
    return load_compose_project(path, project, env).jobs


def load_compose_project(
    path: str | os.PathLike[str],
    project: str | None = None,
    env: Mapping[str, str] | None = None,
    profiles: Sequence[str] = (),
) -> ComposeProject:
    """:func:`load_compose_file`, with the project name, the warnings and the builds."""
    return convert_compose_project(
        Path(path), project, dict(os.environ) if env is None else env, profiles=profiles
    )


def convert_compose_project(
    text_or_path: str | os.PathLike[str],
    project: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    source: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    profiles: Sequence[str] = (),
) -> ComposeProject:
    """:func:`convert_compose`, with the project name and the warnings."""
    given_env = dict(env or {})
    if isinstance(text_or_path, str):
        text = text_or_path
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        dotenv: dict[str, str] = {}
    else:
        path = Path(text_or_path)
        source = source or os.fspath(path)
        text = _read_text(path, "compose file", source)
        base = Path(base_dir) if base_dir is not None else path.absolute().parent
        dotenv = _read_dotenv(base / ".env", given_env)
    full_env = {**dotenv, **given_env}
    return _Converter(text, source, base, full_env, project, list(profiles)).run()


# -- files -------------------------------------------------------------------------------


def _read_text(path: Path, what: str, source: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SpecError(
            [SpecIssue("", f"cannot read {what}: {reason[0].lower()}{reason[1:]}")], source=source
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(
            [SpecIssue("", f"the {what} is not UTF-8 text", line, hint="save it as UTF-8")],
            source=source,
        ) from None


def _read_dotenv(path: Path, env: Mapping[str, str]) -> dict[str, str]:
    if not path.is_file():
        return {}
    source = os.fspath(path)
    values, problems = parse_dotenv(_read_text(path, ".env file", source), env)
    if problems:
        raise SpecError([SpecIssue("", p.message, p.line) for p in problems], source=source)
    return values


# -- the conversion ----------------------------------------------------------------------


class _Converter(Context):
    """The project-level conversion: top-level keys, project name, one job per kind."""

    def __init__(
        self,
        text: str,
        source: str | None,
        base_dir: Path,
        env: dict[str, str],
        project: str | None,
        profiles: list[str],
    ) -> None:
        super().__init__(source, base_dir, env)
        self.text = text
        self.project_arg = project
        self.profiles = _active_profiles(profiles, env)
        self.disabled: dict[str, list[str]] = {}
        self.builds: dict[str, BuildSpec] = {}

    # -- the whole file -----------------------------------------------------------------

    def run(self) -> ComposeProject:
        parsed = load_yaml(self.text, self.source)
        self.locs = parsed.locations
        self.issues.extend(parsed.issues)
        if parsed.empty:
            raise SpecError(
                [SpecIssue("", "the compose file is empty", hint="it needs a services: mapping")],
                source=self.source,
            )
        if not isinstance(parsed.data, dict):
            pos = self.locs.of_value(())
            raise SpecError(
                [
                    SpecIssue(
                        "",
                        f"a compose file is a mapping with services:, got {describe(parsed.data)}",
                        pos[0] if pos else None,
                        pos[1] if pos else None,
                        hint=(
                            "a str is the file's text: pass a pathlib.Path to read a file"
                            if isinstance(parsed.data, str)
                            and parsed.data.endswith((".yaml", ".yml"))
                            else None
                        ),
                    )
                ],
                source=self.source,
            )
        self.data = parsed.data
        self._interpolate_all()
        self._check_top_level()
        name = self._project_name()
        jobs = self._convert(name)
        if self.issues:
            raise SpecError(sort_issues(self.issues), source=self.source)
        return ComposeProject(
            name,
            jobs,
            self.warnings,
            self.source,
            builds=self.builds,
            profiles=self.profiles,
            disabled=self.disabled,
        )

    def _interpolate_all(self) -> None:
        interp = Interpolator(self.env)

        def walk(node: Any, path: PathKey) -> Any:
            if isinstance(node, str):
                try:
                    return interp.expand(node)
                except InterpolationError as exc:
                    self.err(path, str(exc))
                    return node
            if isinstance(node, list):
                return [walk(v, (*path, i)) for i, v in enumerate(node)]
            if isinstance(node, dict):
                out = {}
                for k, v in node.items():
                    skip = isinstance(k, str) and k.startswith("x-") and _extension_level(path)
                    out[k] = v if skip else walk(v, (*path, k))
                return out
            return node

        self.data = walk(self.data, ())
        for name in interp.unset:
            self.warn(f"variable {name} is not set; it was replaced by an empty string")

    def _check_top_level(self) -> None:
        for key in self.data:
            path: PathKey = (key,)
            if not isinstance(key, str):
                self.err(path, f"unknown top-level key {key!r}", key=True)
            elif key.startswith("x-") or key in TOP_LEVEL:
                continue
            elif key in _TOP_REFUSED:
                self.err(path, _TOP_REFUSED[key], key=True)
            else:
                close = suggest(key, list(TOP_LEVEL))
                hint = (
                    f"did you mean {close!r}?"
                    if close
                    else "a compose file holds " + ", ".join(TOP_LEVEL[:-1]) + " and x-* extensions"
                )
                self.err(path, f"unknown top-level key {key!r}", hint, key=True)
        if self.data.get("version") is not None:
            self.warn("version: is obsolete in the Compose Specification and was ignored")

    def _project_name(self) -> str:
        candidates: list[tuple[str, str | None, PathKey | None]] = []
        if self.project_arg:
            candidates.append(("--project", self.project_arg, None))
        elif self.env.get("COMPOSE_PROJECT_NAME"):
            candidates.append(("COMPOSE_PROJECT_NAME", self.env["COMPOSE_PROJECT_NAME"], None))
        elif self.data.get("name") is not None:
            value = self.data["name"]
            if not isinstance(value, str):
                self.err(("name",), f"expected a string, got {describe(value)}")
            else:
                candidates.append(("name:", value, ("name",)))
        for what, value, path in candidates:
            assert value is not None
            if PROJECT_RE.match(value) and len(value) <= 100:
                return value
            message = (
                f"project name {value!r} ({what}) must be lower-case letters, digits, "
                "'_' and '-', starting with a letter or digit"
            )
            suggestion = sanitize_project(value)
            hint = f"try {suggestion!r}" if suggestion else None
            if path is not None:
                self.err(path, message, hint)
            else:
                self.issues.append(SpecIssue("", message, hint=hint))
            return suggestion or "invalid"
        derived = sanitize_project(self.base_dir.absolute().name)
        if not derived:
            self.issues.append(
                SpecIssue(
                    "",
                    f"cannot derive a project name from the directory {self.base_dir.name!r}",
                    hint="set name: in the file or pass --project",
                )
            )
            return "invalid"
        return derived[:100]

    # -- top-level declarations ---------------------------------------------------------

    def _declared(self, key: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        try:
            table = self.mapping((key,), self.data.get(key))
        except Skip:
            return out
        for name, value in table.items():
            try:
                out[name] = self.mapping((key, name), value)
            except Skip:
                out[name] = {}
        return out

    def _volume_names(self, project: str) -> tuple[dict[str, str], dict[str, Any]]:
        """Declared volumes → the Docker volume name each service mounts, and the record."""
        names: dict[str, str] = {}
        record: dict[str, Any] = {}
        for name, decl in self._declared("volumes").items():
            path: PathKey = ("volumes", name)
            external = decl.get("external")
            is_external = bool(external) if not isinstance(external, dict) else True
            driver = decl.get("driver")
            if driver not in (None, "local") or decl.get("driver_opts"):
                self.err(
                    path,
                    f"volume {name!r} uses a volume driver or driver_opts, which are not "
                    "supported yet: the docker driver creates a plain local volume on each node",
                    "use a bind mount of a path every node has (an NFS mount, say) instead",
                    key=True,
                )
            docker_name = decl.get("name")
            if not isinstance(docker_name, str) or not docker_name:
                docker_name = name if is_external else f"{project}_{name}"
            names[name] = docker_name
            record[name] = {"name": docker_name, **({"external": True} if is_external else {})}
        return names, record

    def _network_names(self, project: str, networks: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Declared networks (and ``default``) → the Docker network each one is on a node."""
        names: dict[str, str] = {}
        for name, decl in {"default": {}, **networks}.items():
            path: PathKey = ("networks", name)
            ignored = []
            for key, value in decl.items():
                if key not in NETWORK_KEYS:
                    close = suggest(key, list(NETWORK_KEYS))
                    self.err(
                        (*path, key),
                        f"unknown network key {key!r}",
                        f"did you mean {close!r}?" if close else None,
                        key=True,
                    )
                elif key == "driver" and value in ("bridge", None):
                    continue
                elif key == "driver" and value == "overlay":
                    self.warn(
                        f"network {name!r}: driver overlay becomes a bridge network on each "
                        "node; containers on different nodes do not share it (docs/compose.md)"
                    )
                elif key not in ("name", "external") and value not in (None, False, {}, []):
                    ignored.append(key)
            if ignored:
                self.warn(
                    f"network {name!r}: {', '.join(ignored)} not supported yet and ignored; "
                    "Podium creates a plain bridge network on each node"
                )
            external = decl.get("external")
            is_external = bool(external) if not isinstance(external, dict) else True
            docker_name = decl.get("name")
            if not isinstance(docker_name, str) or not docker_name:
                docker_name = name if is_external else f"{project}_{name}"
            names[name] = docker_name
        return names

    def _files(self, kind: str) -> dict[str, str]:
        """Declared secrets or configs → the host file each one is."""
        out: dict[str, str] = {}
        for name, decl in self._declared(kind).items():
            path: PathKey = (kind, name)
            if isinstance(decl.get("file"), str):
                out[name] = self.local_path(decl["file"])
            elif decl.get("external"):
                self.err(
                    path,
                    f"external {kind} live in Swarm's store, which Podium does not have",
                    "declare it with file: ./path instead (the file must exist on the nodes)",
                    key=True,
                )
            elif "content" in decl or "environment" in decl:
                self.err(
                    path,
                    f"{kind[:-1]} {name!r}: only file-based {kind} are supported yet",
                    "write the value to a file and declare it with file: ./path",
                    key=True,
                )
            else:
                self.err(path, f"{kind[:-1]} {name!r} needs file: ./path", key=True)
        return out

    # -- services -----------------------------------------------------------------------

    def _convert(self, project: str) -> list[JobSpec]:
        volumes, volume_record = self._volume_names(project)
        networks = self._declared("networks")
        project_env = Shared(
            project=project,
            volumes=volumes,
            networks=set(networks) | {"default"},
            secrets=self._files("secrets"),
            configs=self._files("configs"),
            network_names=self._network_names(project, networks),
        )
        services_raw = self.data.get("services")
        if services_raw is None:
            self.err((), "the compose file has no services:", "add a services: mapping")
            return []
        try:
            services = self.mapping(("services",), services_raw)
        except Skip:
            return []
        if not services:
            self.err(("services",), "services: is empty: a project needs at least one service")
            return []
        converted: dict[str, ServiceConverter] = {}
        used_profiles: set[str] = set()
        for name, body in services.items():
            path: PathKey = ("services", name)
            if not NAME_RE.match(name):
                self.err(
                    path,
                    f"service name {name!r} must start with a letter or digit and use only "
                    "letters, digits, '_', '.' and '-'",
                    key=True,
                )
                continue
            try:
                svc = self.mapping(path, body)
                own = self._service_profiles(path, svc.get("profiles"))
            except Skip:
                continue
            used_profiles.update(own)
            if own and "*" not in self.profiles and not set(own) & set(self.profiles):
                self.disabled[name] = own
                continue
            converted[name] = ServiceConverter(self, name, svc, project_env).convert()
            if own:
                converted[name].meta[f"{META_PREFIX}profiles"] = meta_json(own)
            built = converted[name].build
            if built is not None:
                self.builds[name] = built
        for profile in self.profiles:
            if profile != "*" and profile not in used_profiles:
                self.warn(f"profile {profile!r} is not used by any service")
        if not converted and self.disabled and not self.issues:
            every = sorted({p for ps in self.disabled.values() for p in ps})
            self.err(
                ("services",),
                "no service is enabled: every service has profiles, and none of them is "
                "active" + (f" (active: {', '.join(self.profiles)})" if self.profiles else ""),
                "enable one with --profile NAME or COMPOSE_PROFILES (" + ", ".join(every) + ")",
            )
            return []
        order = self._start_order(converted)
        return self._jobs(project, converted, order, networks, volume_record)

    def _service_profiles(self, path: PathKey, value: object) -> list[str]:
        """A service's ``profiles:``: a list of names (``[a-zA-Z0-9][a-zA-Z0-9_.-]*``)."""
        if value is None:
            return []
        names = self.strings((*path, "profiles"), value)
        for i, name in enumerate(names):
            if not PROFILE_RE.match(name):
                self.err(
                    (*path, "profiles", i) if isinstance(value, list) else (*path, "profiles"),
                    f"profile name {name!r} must start with a letter or digit and use only "
                    "letters, digits, '_', '.' and '-'",
                )
        return [n for n in names if PROFILE_RE.match(n)]

    def _start_order(self, services: dict[str, ServiceConverter]) -> list[str]:
        for svc in services.values():
            for dep in list(svc.depends_on):
                where = svc.depends_paths.get(dep, ("services", svc.name, "depends_on"))
                if dep in services:
                    continue
                if dep in svc.depends_optional:
                    self.warn(
                        f"service {svc.name!r} depends on {dep!r} (required: false), which "
                        + ("is not enabled" if dep in self.disabled else "is not a service")
                        + ": it starts without it"
                    )
                    del svc.depends_on[dep]
                elif dep in self.disabled:
                    names = ", ".join(self.disabled[dep])
                    self.err(
                        where,
                        f"service {svc.name!r} depends on {dep!r}, which is not enabled: none "
                        f"of its profiles ({names}) is active",
                        f"enable one with --profile {self.disabled[dep][0]}, give {svc.name!r} "
                        f"the same profiles, or set required: false on the dependency",
                    )
                elif dep in self.data.get("services", {}):
                    continue  # that service had its own error
                else:
                    close = suggest(dep, list(services))
                    self.err(
                        where,
                        f"service {svc.name!r} depends on {dep!r}, which is not a service",
                        f"did you mean {close!r}?" if close else None,
                    )
        graph = {
            name: [d for d in svc.depends_on if d in services] for name, svc in services.items()
        }
        cycle = _find_cycle(graph)
        if cycle:
            self.err(
                ("services", cycle[0], "depends_on"),
                "depends_on forms a cycle: " + " -> ".join(cycle),
                "a service cannot wait, directly or not, for itself",
            )
            return list(services)
        self._group_dependencies(services)
        return topological_order(graph)

    def _group_dependencies(self, services: dict[str, ServiceConverter]) -> None:
        """depends_on → the group's ``depends_on`` (waited for when first placed).

        Only groups of one job can wait for each other; a global service is a job of
        its own, so an order that crosses jobs is not enforced and gets a warning.
        """
        for svc in services.values():
            waits: dict[str, str] = {}
            for dep, condition in svc.depends_on.items():
                other = services.get(dep)
                if other is None:
                    continue
                if condition == "service_healthy" and not other.has_healthcheck:
                    self.err(
                        svc.depends_paths.get(dep, ("services", svc.name, "depends_on")),
                        f"service {svc.name!r} waits for {dep!r} to be healthy, but {dep!r} "
                        "has no healthcheck",
                        f"add a healthcheck: to {dep!r} (the image's own HEALTHCHECK cannot be "
                        "seen when converting), or use condition: service_started",
                    )
                    continue
                if svc.is_global or other.is_global:
                    self.warn(
                        f"service {svc.name!r} depends on {dep!r} ({condition}), but "
                        + ("they run" if svc.is_global and other.is_global else "one runs")
                        + " as a separate system job (deploy.mode: global): Podium cannot "
                        "hold one job's start for another's, so that order is not enforced"
                    )
                    continue
                if condition == "service_completed_successfully":
                    self.warn(
                        f"service {svc.name!r} depends on {dep!r} completing successfully: "
                        f"Podium runs Compose services as long-running services (an exited "
                        f"task is restarted), so {svc.name!r} starts once {dep!r} has "
                        "started; run one-off steps as a batch job before `compose up`"
                    )
                    waits[dep] = "started"
                    continue
                waits[dep] = GROUP_CONDITIONS[condition]
            if waits:
                svc.group["depends_on"] = waits

    def _jobs(
        self,
        project: str,
        services: dict[str, ServiceConverter],
        order: list[str],
        networks: dict[str, dict[str, Any]],
        volumes: dict[str, Any],
    ) -> list[JobSpec]:
        base_meta = {f"{META_PREFIX}project": project}
        if self.source:
            base_meta[f"{META_PREFIX}file"] = self.source
        main_meta = {**base_meta, f"{META_PREFIX}start_order": meta_json(order)}
        if networks:
            main_meta[f"{META_PREFIX}networks"] = meta_json(networks)
        if volumes:
            main_meta[f"{META_PREFIX}volumes"] = meta_json(volumes)
        groups = {n: services[n].group for n in order if not services[n].is_global}
        docs: list[tuple[str, dict[str, Any]]] = []
        if groups:
            docs.append(
                ("", {"job": project, "type": "service", "meta": main_meta, "groups": groups})
            )
        for name in order:
            if services[name].is_global:
                job = {
                    "job": f"{project}-{name}",
                    "type": "system",
                    "meta": {**base_meta, f"{META_PREFIX}service": name},
                    "groups": {name: services[name].group},
                }
                docs.append((name, job))
        jobs: list[JobSpec] = []
        if self.issues:  # the model would only repeat them, less clearly
            return jobs
        for _, doc in docs:
            try:
                jobs.append(validate_job_dict(doc, self.source))
            except SpecError as exc:
                for issue in exc.issues:
                    self._job_issue(issue)
        return jobs

    def _job_issue(self, issue: SpecIssue) -> None:
        """An issue the job model found in the converted job, pointed at its service."""
        parts = issue.path.split(".")
        path: PathKey = ("services", parts[1]) if len(parts) > 1 and parts[0] == "groups" else ()
        pos = self.locs.of_key(path)
        where = f"in the converted job, {issue.path}: " if issue.path else ""
        self.issues.append(
            SpecIssue(
                format_path(path, self.data),
                where + issue.message,
                pos[0] if pos else None,
                pos[1] if pos else None,
                issue.hint,
            )
        )


def _active_profiles(given: list[str], env: Mapping[str, str]) -> list[str]:
    """``--profile`` values, or else ``COMPOSE_PROFILES`` (comma-separated), as Compose
    takes them: the command line wins over the environment."""
    chosen = given or (env.get("COMPOSE_PROFILES") or "").split(",")
    return list(dict.fromkeys(p.strip() for p in chosen if p.strip()))


def _extension_level(path: PathKey) -> bool:
    """True where ``x-*`` keys are extensions: the top level and a service's body."""
    return path == () or (len(path) == 2 and path[0] == "services")


def topological_order(graph: Mapping[str, list[str]]) -> list[str]:
    """Services in an order that starts each after the ones it depends on.

    Among services that are ready together, the file's order is kept.
    ``graph`` maps a service to its dependencies and must have no cycle.
    """
    done: list[str] = []
    placed: set[str] = set()
    pending = list(graph)
    while pending:
        for name in pending:
            if all(d in placed for d in graph[name]):
                done.append(name)
                placed.add(name)
                pending.remove(name)
                break
        else:  # pragma: no cover - callers check for cycles first
            raise ValueError("the dependency graph has a cycle")
    return done


def _find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """A cycle as ``[a, b, a]``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None
