"""``podium compose up``'s images: build ``build:`` services here, push them if asked.

The conversion names the image a built service's job runs
(``<project>-<service>`` or its ``image:``); this module makes it exist, as
``docker compose up`` does:

* without ``--build``, a service whose image the local Docker Engine lacks is
  built (Compose builds missing images), one it has is used as it is;
* with ``--build`` (or ``pull_policy: build``) it is always built;
* ``--no-build`` builds nothing and the nodes use the image name as written.

A local build only helps nodes that run on this engine.  Each node's docker
driver reports its engine's id (``driver.docker.engine_id``); when a node with
the docker driver runs on another engine, the build needs ``--push REGISTRY``,
which tags the image ``REGISTRY/<name>``, pushes it, and points the job at the
pushed digest (so a rebuilt image under the same tag still replaces the
containers).  Otherwise ``up`` stops before it registers anything, and says what
to do.  Every built image's id goes on the container as the label
``podium.compose.image``: a rebuilt image changes the task and its containers
are replaced, as Compose recreates a container whose image changed.

The Engine's classic builder is used (the docker SDK's), not BuildKit:
Dockerfiles that need BuildKit (``RUN --mount``) fail with the builder's own
message.  A failed build prints the build's output and the Engine's error, and
nothing is sent to the server.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from podium.models import JobSpec
from podium.models.views import NodeInfo
from podium.spec.compose_build import BuildSpec
from podium.spec.compose_service import LABEL_IMAGE, LABEL_PROJECT, LABEL_SERVICE


class BuildFailed(Exception):
    """An image could not be built, tagged or pushed; the message says which and why."""


@dataclass(frozen=True)
class Prepared:
    """What a built service's task runs: the image reference and the image's id."""

    image: str
    image_id: str
    pushed: bool = False


def engine_factory() -> Any:
    """The local Docker Engine's client (``DOCKER_HOST`` or the default socket)."""
    import docker  # type: ignore[import-untyped]  # only needed when a project builds

    return docker.from_env(timeout=600)


make_engine: Callable[[], Any] = engine_factory
"""Replaced in unit tests by a fake engine; the real one everywhere else."""


def open_engine() -> Any:
    try:
        engine = make_engine()
        engine.ping()
    except Exception as exc:
        raise BuildFailed(
            "building an image needs a Docker Engine on this machine (DOCKER_HOST or "
            f"/var/run/docker.sock), and none answers: {exc}"
        ) from None
    return engine


def engine_id(engine: Any) -> str:
    return str(engine.info().get("ID") or "")


def foreign_nodes(nodes: list[NodeInfo], local_id: str) -> list[NodeInfo]:
    """Ready nodes with a working docker driver on another engine than ``local_id``.

    A node whose agent does not report its engine (an older one) counts as
    another engine: nothing says it has the image.
    """
    out = []
    for node in nodes:
        if not node.ready() or node.attributes.get("driver.docker") != "1":
            continue
        if node.attributes.get("driver.docker.engine_id") != local_id:
            out.append(node)
    return out


def image_exists(engine: Any, name: str) -> str | None:
    """The local image's id, or None when the engine does not have it."""
    try:
        return str(engine.images.get(name).id)
    except Exception as exc:
        if type(exc).__name__ == "ImageNotFound":
            return None
        raise BuildFailed(f"cannot look up image {name!r} in the local engine: {exc}") from None


def build(engine: Any, spec: BuildSpec, project: str, out: Callable[[str], None]) -> str:
    """Build ``spec`` with the local engine, streaming the builder's output to ``out``;
    the image's id.  Raises BuildFailed with the Engine's error."""
    dockerfile = spec.dockerfile
    inline_path: str | None = None
    if spec.dockerfile_inline is not None:
        fd, inline_path = tempfile.mkstemp(prefix="podium-dockerfile-")
        with os.fdopen(fd, "w") as f:
            f.write(spec.dockerfile_inline)
        dockerfile = inline_path  # outside the context: the SDK sends it along
    labels = {**spec.labels, LABEL_PROJECT: project, LABEL_SERVICE: spec.service}
    try:
        stream = engine.api.build(
            path=spec.context,
            dockerfile=dockerfile,
            tag=spec.image,
            buildargs=spec.args or None,
            target=spec.target,
            labels=labels,
            network_mode=spec.network,
            nocache=spec.no_cache,
            pull=spec.pull,
            cache_from=spec.cache_from or None,
            shmsize=spec.shm_size,
            extra_hosts=spec.extra_hosts or None,
            platform=spec.platform,
            rm=True,
            forcerm=True,
            decode=True,
        )
        error = _drain(stream, out)
    except BuildFailed:
        raise
    except Exception as exc:
        raise BuildFailed(f"service {spec.service!r} failed to build: {exc}") from None
    finally:
        if inline_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(inline_path)
    if error:
        raise BuildFailed(f"service {spec.service!r} failed to build: {error}")
    image_id = image_exists(engine, spec.image)
    if image_id is None:  # pragma: no cover - the engine reported success
        raise BuildFailed(f"service {spec.service!r}: the build left no image {spec.image!r}")
    for extra in spec.tags:
        repo, tag = _split_tag(extra)
        engine.api.tag(image_id, repo, tag)
    return image_id


def _drain(stream: Iterator[dict[str, Any]], out: Callable[[str], None]) -> str:
    """Print the builder's ``stream`` lines; the error it ended with, if any."""
    error = ""
    for chunk in stream:
        if "stream" in chunk:
            out(str(chunk["stream"]))
        elif "status" in chunk:
            out(str(chunk["status"]) + "\n")
        if chunk.get("error"):
            error = str(chunk["error"]).strip()
            detail = chunk.get("errorDetail") or {}
            if detail.get("message") and detail["message"] not in error:
                error += f" ({detail['message']})"
    return error


def pushed_name(image: str, registry: str) -> str:
    """``image`` under ``registry``: its own registry host, if any, replaced."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        image = rest
    return f"{registry.rstrip('/')}/{image}"


def push(engine: Any, image: str, registry: str, out: Callable[[str], None]) -> str:
    """Tag ``image`` under ``registry`` and push it; the pushed reference, by digest."""
    target = pushed_name(image, registry)
    repo, tag = _split_tag(target)
    try:
        engine.api.tag(image, repo, tag)
        error = ""
        digest = ""
        for chunk in engine.api.push(repo, tag=tag, stream=True, decode=True):
            if chunk.get("error"):
                error = str(chunk["error"]).strip()
            aux = chunk.get("aux") or {}
            if aux.get("Digest"):
                digest = str(aux["Digest"])
            if chunk.get("status") and chunk.get("id") is None:
                out(str(chunk["status"]) + "\n")
    except Exception as exc:
        raise BuildFailed(f"cannot push {repo}:{tag}: {exc}") from None
    if error:
        raise BuildFailed(f"cannot push {repo}:{tag}: {error}")
    return f"{repo}@{digest}" if digest else f"{repo}:{tag}"


def _split_tag(name: str) -> tuple[str, str]:
    """``repo[:tag]`` → (repo, tag); a ``:`` in a registry's host:port is not a tag."""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, "latest"


def apply(jobs: list[JobSpec], service: str, prepared: Prepared) -> None:
    """Point the built service's task at ``prepared`` (in whichever job holds it)."""
    for job in jobs:
        group = job.groups.get(service)
        if group is None or service not in group.tasks:
            continue
        config = group.tasks[service].config
        config["image"] = prepared.image
        if prepared.pushed and config.get("image_pull") == "never":
            config["image_pull"] = "if_not_present"  # by digest: what is present is it
        labels = dict(config.get("labels") or {})
        labels[LABEL_IMAGE] = prepared.image_id
        config["labels"] = labels
