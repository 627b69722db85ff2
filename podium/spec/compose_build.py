"""A service's ``build:`` section, read and checked, for whoever builds the image.

The conversion is pure (it runs in the server too), so it does not build: it
reads ``build:`` into a :class:`BuildSpec` (the context as an absolute path,
the Dockerfile, the build arguments...) and names the image the job will run,
``<project>-<service>`` unless the service says ``image:``, which is the tag
``docker compose build`` gives it.  ``podium compose up`` builds with the local
Docker Engine from these specs (:mod:`podium.cli.compose_build`).

What the Engine's classic builder cannot do (BuildKit's ``ssh``, ``secrets``,
``cache_to``, ``additional_contexts``...) is named in a warning, never dropped
without a word.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.spec.compose_values import size_bytes
from podium.spec.messages import describe, suggest

if TYPE_CHECKING:
    from podium.spec.compose_context import Context
    from podium.spec.locations import PathKey

BUILD_KEYS = (
    "context",
    "dockerfile",
    "dockerfile_inline",
    "args",
    "target",
    "labels",
    "network",
    "no_cache",
    "pull",
    "cache_from",
    "shm_size",
    "extra_hosts",
    "platforms",
    "tags",
)
"""``build:`` keys the build honours."""
BUILD_IGNORED = (
    "ssh",
    "secrets",
    "cache_to",
    "additional_contexts",
    "isolation",
    "privileged",
    "ulimits",
    "entitlements",
    "provenance",
    "sbom",
)
"""``build:`` keys of BuildKit or of other platforms: warned about and left out."""
_REMOTE = ("http://", "https://", "git://", "git@", "github.com/")


@dataclass(frozen=True)
class BuildSpec:
    """How to build one service's image, as ``docker compose build`` would."""

    service: str
    image: str
    """The tag the build gets and the job runs (``<project>-<service>`` or ``image:``)."""
    context: str
    """The build context, an absolute directory."""
    dockerfile: str | None = None
    """Relative to the context, or absolute (it may lie outside the context)."""
    dockerfile_inline: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    network: str | None = None
    no_cache: bool = False
    pull: bool = False
    cache_from: list[str] = field(default_factory=list)
    shm_size: int | None = None
    """Bytes."""
    extra_hosts: dict[str, str] = field(default_factory=dict)
    platform: str | None = None
    tags: list[str] = field(default_factory=list)
    """More tags for the same image."""
    always: bool = False
    """``pull_policy: build``: build on every ``up``, even when the image is there."""


def default_image(project: str, service: str) -> str:
    """The tag Compose gives a built service without ``image:``: ``<project>-<service>``."""
    return f"{project}-{service}".lower()


def parse_build(
    c: Context, path: PathKey, service: str, value: object, image: str, always: bool
) -> BuildSpec:
    """``build: ./dir`` or the long form, as a :class:`BuildSpec`; issues go to ``c``."""
    short = isinstance(value, str)
    body: dict[str, Any] = {"context": value} if short else c.mapping(path, value)
    for key in body:
        if key in BUILD_KEYS:
            continue
        if key in BUILD_IGNORED:
            if body[key] not in (None, [], {}, False):
                c.warn(
                    f"service {service!r}: build.{key} was ignored (the Docker Engine's classic "
                    "builder, which podium compose builds with, has no such option)"
                )
            continue
        close = suggest(str(key), list(BUILD_KEYS + BUILD_IGNORED))
        c.err(
            (*path, key),
            f"unknown build key {key!r}",
            f"did you mean {close!r}?" if close else None,
            key=True,
        )
    context_text = body.get("context")
    if context_text in (None, ""):
        context_text = "."
    context_text = c.string((*path, "context"), context_text, numbers=False)
    context_path: PathKey = (*path, "context") if "context" in body and not short else path
    if context_text.startswith(_REMOTE):
        c.fail(
            context_path,
            f"remote build contexts ({context_text!r}) are not supported yet",
            "clone it and point build: at the directory",
        )
    context = c.local_path(context_text)
    if not Path(context).is_dir():
        c.fail(context_path, f"the build context {context_text!r} is not a directory ({context})")
    dockerfile = _optional_str(c, (*path, "dockerfile"), body.get("dockerfile"))
    inline = _optional_str(c, (*path, "dockerfile_inline"), body.get("dockerfile_inline"))
    if dockerfile and inline:
        c.fail(
            (*path, "dockerfile_inline"),
            "build: takes dockerfile or dockerfile_inline, not both",
            key=True,
        )
    if inline is None:
        where = os.path.join(context, os.path.expanduser(dockerfile or "Dockerfile"))
        if not Path(where).is_file():
            c.fail(
                (*path, "dockerfile") if dockerfile else context_path,
                f"no Dockerfile at {where}",
                "write one, or name it with build.dockerfile",
            )
    platforms = _strings(c, (*path, "platforms"), body.get("platforms"))
    if len(platforms) > 1:
        c.warn(
            f"service {service!r}: build.platforms names {len(platforms)} platforms; the "
            f"local engine builds one image, for {platforms[0]}"
        )
    shm = body.get("shm_size")
    return BuildSpec(
        service=service,
        image=image,
        context=context,
        dockerfile=dockerfile,
        dockerfile_inline=inline,
        args=_args(c, (*path, "args"), body.get("args")),
        target=_optional_str(c, (*path, "target"), body.get("target")),
        labels=_pairs(c, (*path, "labels"), body.get("labels")),
        network=_optional_str(c, (*path, "network"), body.get("network")),
        no_cache=_flag(c, (*path, "no_cache"), body.get("no_cache")),
        pull=_flag(c, (*path, "pull"), body.get("pull")),
        cache_from=_strings(c, (*path, "cache_from"), body.get("cache_from")),
        shm_size=None if shm in (None, "") else c.parsed((*path, "shm_size"), size_bytes, shm),
        extra_hosts=_hosts(c, (*path, "extra_hosts"), body.get("extra_hosts")),
        platform=platforms[0] if platforms else None,
        tags=_strings(c, (*path, "tags"), body.get("tags")),
        always=always,
    )


def _optional_str(c: Context, path: PathKey, value: object) -> str | None:
    if value in (None, ""):
        return None
    return c.string(path, value)


def _flag(c: Context, path: PathKey, value: object) -> bool:
    return False if value in (None, "") else c.boolean(path, value)


def _strings(c: Context, path: PathKey, value: object) -> list[str]:
    return [] if value is None else [s for s in c.strings(path, value) if s]


def _args(c: Context, path: PathKey, value: object) -> dict[str, str]:
    """Build arguments: a map, or a list of ``K=V``; a bare ``K`` takes the environment's
    value, and is left out when the environment has none (the Dockerfile's default)."""
    out: dict[str, str] = {}
    if value is None:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            if v is None:
                if str(k) in c.env:
                    out[str(k)] = c.env[str(k)]
                continue
            out[str(k)] = (
                "true" if v is True else "false" if v is False else c.string((*path, k), v)
            )
        return out
    for item in c.strings(path, value):
        key, eq, val = item.partition("=")
        if eq:
            out[key] = val
        elif key in c.env:
            out[key] = c.env[key]
    return out


def _pairs(c: Context, path: PathKey, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else c.string((*path, k), v) for k, v in value.items()}
    out: dict[str, str] = {}
    for item in c.strings(path, value):
        key, _, val = item.partition("=")
        out[key] = val
    return out


def _hosts(c: Context, path: PathKey, value: object) -> dict[str, str]:
    """``extra_hosts`` as a map, or a list of ``host:ip`` / ``host=ip``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): c.string((*path, k), v) for k, v in value.items()}
    if not isinstance(value, list):
        c.fail(path, f"expected a list or a mapping of hosts, got {describe(value)}")
    out: dict[str, str] = {}
    for i, item in enumerate(value):
        text = c.string((*path, i), item)
        sep = "=" if "=" in text else ":"
        host, _, ip = text.partition(sep)
        if not host or not ip:
            c.err((*path, i), f"{text!r} is not HOST:IP")
            continue
        out[host] = ip
    return out
