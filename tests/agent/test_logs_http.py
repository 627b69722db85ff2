"""The agent's logs endpoint reads only the allocation's own task logs.

A task name is one of the allocation's tasks, never a path (``../../x`` read any
``.stdout`` on the node); the files are opened through the log directory's fd with no
symlink followed, so a task that plants ``t.stdout -> /some/secret`` (or replaces the
log directory with a link) makes the root agent read nothing of it.  Both ways of
opening (openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, and O_NOFOLLOW per
component) are tested.  Bad ``offset``/``origin`` are 400s.  Real files throughout.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.agent.http import create_agent_app
from podium.agent.runner import AllocRunner
from podium.drivers import beneath
from podium.drivers.logrotate import rotate_if_needed
from podium.drivers.mock import MockDriver
from podium.models import JobSpec

from .conftest import make_alloc, until

SECRET = "root:$6$secret-hash:19000:0:99999:7:::\n"
SPEC = JobSpec.model_validate(
    {
        "job": "web",
        "groups": {"g": {"tasks": {"t": {"driver": "mock", "config": {"run_for": "1h"}}}}},
    }
)


@pytest.fixture(params=["openat2", "nofollow"])
def opener(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with openat2 (skipped where the kernel lacks it), and with the
    O_NOFOLLOW-per-component fallback."""
    if request.param == "openat2":
        if not beneath.openat2_available():
            pytest.skip("this kernel has no openat2 (Linux < 5.6, or a seccomp filter)")
        monkeypatch.setattr(beneath, "_openat2_works", True)
    else:
        monkeypatch.setattr(beneath, "_openat2_works", False)
    return str(request.param)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(
        AgentSettings(data_dir=str(tmp_path / "agent"), servers=[], workload_identity=False),
        client=None,  # type: ignore[arg-type]  # never started: no server needed
        drivers={"mock": MockDriver()},
    )
    alloc = make_alloc("alloc-1")
    runner = AllocRunner(agent, alloc, SPEC)
    runner.make_dirs()
    agent.runners[alloc.id] = runner
    yield agent
    runner.close()
    agent.state.close()


@pytest.fixture
async def http(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_agent_app(agent))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        yield client


def logs_dir(agent: Agent) -> Path:
    return agent.runners["alloc-1"].alloc_dir / "alloc" / "logs"


URL = "/v1/client/allocation/alloc-1/logs"


async def test_a_task_name_is_never_a_path(
    http: httpx.AsyncClient, agent: Agent, tmp_path: Path, opener: str
) -> None:
    (tmp_path / "outside.stdout").write_text(SECRET)
    (logs_dir(agent) / "t.stdout").write_text("mine\n")
    assert (await http.get(URL, params={"task": "t"})).text == "mine\n"
    climb = os.path.relpath(tmp_path / "outside", logs_dir(agent))  # ../../../../../outside
    r = await http.get(URL, params={"task": climb})
    assert r.status_code == 404
    assert "has no task" in r.json()["error"] and "tasks: t" in r.json()["error"]
    assert SECRET not in r.text
    r = await http.get("/v1/client/allocation/../logs", params={"task": "t"})
    assert r.status_code == 404
    r = await http.get("/v1/client/allocation/nope/logs", params={"task": "t"})
    assert r.status_code == 404 and "no logs for allocation nope" in r.json()["error"]


async def test_a_planted_symlink_is_not_followed(
    http: httpx.AsyncClient, agent: Agent, tmp_path: Path, opener: str
) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text(SECRET)
    logs = logs_dir(agent)
    (logs / "t.stdout").symlink_to(shadow)
    (logs / "t.stdout.1").symlink_to(shadow)  # a "rotated" copy, too
    (logs / "t.stderr").write_text("real\n")
    r = await http.get(URL, params={"task": "t"})
    assert r.status_code == 200 and SECRET not in r.text and r.text == ""
    assert (await http.get(URL, params={"task": "t", "type": "stderr"})).text == "real\n"
    # the whole log directory replaced by a link to elsewhere
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "t.stdout").write_text(SECRET)
    shutil.rmtree(logs)
    logs.symlink_to(elsewhere)
    r = await http.get(URL, params={"task": "t"})
    assert r.status_code in (403, 404) and SECRET not in r.text


@pytest.mark.parametrize("offset", ["-1", "-100", "abc", "1.5", ""])
async def test_a_bad_offset_is_a_400(http: httpx.AsyncClient, offset: str) -> None:
    r = await http.get(URL, params={"task": "t", "offset": offset})
    assert r.status_code == 400
    assert "offset must be a non-negative integer" in r.json()["error"]
    r = await http.get(URL, params={"task": "t", "origin": "middle"})
    assert r.status_code == 400 and "origin" in r.json()["error"]


@pytest.fixture
async def served(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    """The agent's app on a real socket (the ASGI transport buffers a whole response, so a
    follow stream needs one)."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_agent_app(agent), log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started, "the agent's HTTP server", timeout=10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client
    server.should_exit = True
    await asyncio.wait_for(task, 10)
    sock.close()


async def test_rotated_logs_read_as_one_stream_and_follow_across_a_rotation(
    served: httpx.AsyncClient, agent: Agent, opener: str
) -> None:
    http = served
    root = agent.runners["alloc-1"].alloc_path
    log = logs_dir(agent) / "t.stdout"
    log.write_text("one\n")
    assert rotate_if_needed(str(log), 1, 5, root=root)
    with open(log, "a") as f:
        f.write("two\n")
    r = await http.get(URL, params={"task": "t"})
    assert r.text == "one\ntwo\n"
    assert (await http.get(URL, params={"task": "t", "origin": "end", "offset": "4"})).text == (
        "two\n"
    )

    got: list[bytes] = []

    async def follow() -> None:
        async with http.stream("GET", URL, params={"task": "t", "follow": "true"}) as resp:
            async for chunk in resp.aiter_bytes():
                got.append(chunk)

    reader = asyncio.create_task(follow())
    await until(lambda: b"".join(got) == b"one\ntwo\n", "the log so far", timeout=10)
    with open(log, "a") as f:
        f.write("three\n")
    await until(lambda: b"".join(got).endswith(b"three\n"), "an appended line", timeout=10)
    with open(log, "a") as f:
        f.write("four\n")
    assert rotate_if_needed(str(log), 1, 5, root=root)  # four is now only in t.stdout.2
    with open(log, "a") as f:
        f.write("five\n")
    await until(lambda: b"".join(got).endswith(b"five\n"), "lines across a rotation", timeout=10)
    assert b"".join(got) == b"one\ntwo\nthree\nfour\nfive\n"
    runner = agent.runners.pop("alloc-1")  # gone: the follower ends
    try:
        await asyncio.wait_for(reader, 10)
    finally:
        agent.runners["alloc-1"] = runner
