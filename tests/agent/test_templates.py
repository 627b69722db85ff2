"""Templates: sandboxed rendering, safe writing, env files, and re-rendering on change.

The rendering tests read variables and services from a real in-process server
(through the SDK over httpx's ASGI transport); the life-cycle tests run a real
agent with the mock driver against it.  No processes, no sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from podium.agent import templates
from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.agent.templates import (
    Lookups,
    TemplateError,
    parse_env,
    read_existing,
    read_source,
    render,
    write_file,
)
from podium.client import AsyncClient
from podium.drivers.base import TaskContext, TaskHandle, TaskOwner
from podium.drivers.mock import MockDriver
from podium.models import Allocation, ClientStatus, JobSpec, ServiceRegistration, Template
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import StateStore


class RecordingMock(MockDriver):
    """The mock driver, remembering the environment each start was given."""

    def __init__(self) -> None:
        super().__init__()
        self.envs: list[dict[str, str]] = []

    async def start(self, ctx: TaskContext) -> TaskHandle:
        self.envs.append(dict(ctx.env))
        return await super().start(ctx)


@dataclass
class Env:
    server: Server
    store: StateStore
    client: AsyncClient
    transport: httpx.ASGITransport
    tmp: Path
    agents: list[Agent] = field(default_factory=list)

    async def agent(self, driver: MockDriver) -> Agent:
        client = AsyncClient("http://podium", transport=self.transport, timeout=30)
        agent = Agent(
            AgentSettings(
                data_dir=str(self.tmp / "agent"),
                servers=["http://podium"],
                name="node0",
                sync_wait=5.0,
            ),
            client,
            drivers={"mock": driver},
        )
        await agent.start(http_addr="")
        await asyncio.wait_for(agent.registered.wait(), 5)
        self.agents.append(agent)
        return agent

    async def until(self, cond: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            value = cond()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what or cond}")

    def alloc(self, job: str) -> Allocation | None:
        allocs = self.store.allocs_by_job(job)
        return allocs[0] if allocs else None

    def running(self, job: str) -> Allocation | None:
        a = self.alloc(job)
        return a if a is not None and a.client_status == ClientStatus.RUNNING else None


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = StateStore()
    server = Server(store, ServerConfig(heartbeat_ttl=5, heartbeat_grace=5))
    await server.start()
    transport = httpx.ASGITransport(app=create_app(server))
    client = AsyncClient("http://podium", transport=transport, timeout=30)
    e = Env(server=server, store=store, client=client, transport=transport, tmp=tmp_path)
    try:
        yield e
    finally:
        for agent in e.agents:
            with contextlib.suppress(Exception):
                await agent.stop_all_tasks(timeout=2)
            with contextlib.suppress(Exception):
                await agent.stop()
        await client.aclose()
        await server.stop()


LITERAL = (
    'template local/out.conf: var() and service() take a literal path, such as var("app/config")'
)


def tpl(**kw: Any) -> Template:
    kw.setdefault("destination", "local/out.conf")
    return Template.model_validate(kw)


async def _render(env: Env, data: str, tmp: Path, **task_env: str) -> str:
    return await render(tpl(data=data), tmp, task_env, Lookups(env.client))


# --------------------------------------------------------------------------- rendering


async def test_var_items_as_attributes_and_keys_and_env(env: Env, tmp_path: Path) -> None:
    await env.client.var_put("app/config", {"db_url": "postgres://db/app", "user": "x"})
    text = await _render(
        env,
        '{{ var("app/config").db_url }} {{ var("app/config")["user"] }}\n'
        '{% for k, v in var("app/config").items() %}{{ k }}={{ v }};{% endfor %}\n'
        "{{ env.PODIUM_ALLOC_ID }}\n",
        tmp_path,
        PODIUM_ALLOC_ID="a1",
    )
    assert text == "postgres://db/app x\ndb_url=postgres://db/app;user=x;\na1\n"


async def test_one_read_per_variable_and_dependencies_recorded(env: Env, tmp_path: Path) -> None:
    var = await env.client.var_put("app/config", {"a": "1"})
    lookups = Lookups(env.client)
    await render(
        tpl(data='{{ var("app/config").a }}{{ var("app/config").a }}'), tmp_path, {}, lookups
    )
    dep = lookups.deps[("var", "app/config")]
    assert dep.marker == var.modify_index and dep.index >= var.modify_index


async def test_service_lists_healthy_instances(env: Env, tmp_path: Path) -> None:
    txn = env.store.txn()
    for i, healthy in enumerate((True, False, True)):
        txn.put_service(
            ServiceRegistration(
                id=f"a{i}/db",
                service_name="db",
                job_id="db",
                group="g",
                alloc_id=f"a{i}",
                node_id="n",
                address=f"10.0.0.{i + 1}",
                port=5432,
                tags=["primary"] if i == 0 else [],
                healthy=healthy,
            )
        )
    env.store.commit(txn)
    text = await _render(
        env,
        '{% for s in service("db") %}{{ s.address }}:{{ s.port }} {{ s.tags|join(",") }}\n'
        '{% endfor %}{{ service("nothing")|length }} {{ service("db")[0] }}',
        tmp_path,
    )
    assert text == "10.0.0.1:5432 primary\n10.0.0.3:5432 \n0 10.0.0.1:5432"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{{ var("nope").x }}', "template local/out.conf: variable 'nope' not found"),
        ('{{ var("app/config").nope }}', "variable 'app/config' has no item 'nope' (it has: a)"),
        ("line one\n{{ broken", "template local/out.conf: syntax error on line 2"),
        ("{{ undefined_name }}", "'undefined_name' is undefined"),
        ('{{ var("../etc") }}', "variable path '../etc' must be segments"),
        ("{{ var(3) }}", LITERAL),
        ("{% set p = 'app/config' %}{{ var(p).a }}", LITERAL),
        ('{{ service(name="db") }}', LITERAL),
        ("{% set v = var %}{{ v('app/config').a }}", LITERAL),
        ('{{ service("") }}', "service() takes a service name"),
    ],
)
async def test_render_failures_name_the_template(
    env: Env, tmp_path: Path, data: str, message: str
) -> None:
    await env.client.var_put("app/config", {"a": "secret-value"})
    with pytest.raises(TemplateError) as info:
        await _render(env, data, tmp_path)
    assert message in str(info.value)
    assert info.value.recoverable
    assert "secret-value" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "refused"),
    [
        ("{{ ''.__class__ }}", "attribute '__class__' of 'str' object is unsafe"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "'__class__' of 'str'"),
        ("{{ var.__globals__ }}", "attribute '__globals__' of 'method' object is unsafe"),
        ("{{ lipsum.__globals__ }}", "'__globals__' of 'function'"),
        ("{{ cycler.__init__.__globals__ }}", "'__init__' of 'type'"),
        ('{{ var("app/config")._items }}', "'_items' of 'VariableItems'"),
        ("{{ service.__self__ }}", "'__self__' of 'method'"),
        ("{{ env.update({'PATH': '/evil'}) }}", "'update' of 'dict'"),
    ],
)
async def test_the_sandbox_refuses_internals(
    env: Env, tmp_path: Path, data: str, refused: str
) -> None:
    await env.client.var_put("app/config", {"a": "1"})
    with pytest.raises(TemplateError) as info:
        await _render(env, data, tmp_path)
    assert str(info.value).startswith("template local/out.conf: refused by the sandbox: ")
    assert refused in str(info.value)


async def test_huge_ranges_are_refused(env: Env, tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="MAX_RANGE"):
        await _render(env, "{% for x in range(10**9) %}{% endfor %}", tmp_path)


def _workers() -> list[int]:
    """This process's render workers still running."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"render_worker" in cmdline:
            found.append(int(entry))
    return found


@contextlib.asynccontextmanager
async def ticking() -> AsyncIterator[list[float]]:
    """The loop times of 10 ms ticks of the event loop while the block runs (the first is
    its start; the block's end is added when it ends)."""
    loop = asyncio.get_running_loop()
    ticks = [loop.time()]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks.append(loop.time())

    task = loop.create_task(tick())
    try:
        yield ticks
    finally:
        task.cancel()
        ticks.append(loop.time())


def longest_gap(ticks: list[float]) -> float:
    return max(b - a for a, b in itertools.pairwise(ticks))


@pytest.mark.parametrize(
    ("data", "stopped"),
    [
        pytest.param(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "rendering used more than 1s of CPU time and was stopped",
            id="nested-loops",
        ),
        pytest.param(
            '{{ "a" * 2000000 }}',  # one chunk past 1 MiB
            "rendering produced more than 1 MiB and was stopped",
            id="big-string",
        ),
        pytest.param(
            '{{ "a" * 2000000000 }}',
            "rendering used more than 512 MiB of memory and was stopped",
            id="huge-string",
        ),
        pytest.param(
            '{% for i in range(100000) %}{{ "x" * 100 }}{% endfor %}',
            "rendering produced more than 1 MiB and was stopped",
            id="long-output",
        ),
        pytest.param(  # slow to *parse*: the worker's problem too
            "{{ [" + "1," * 400_000 + "1] }}",
            "rendering used more than 1s of CPU time and was stopped",
            id="slow-parse",
        ),
    ],
)
async def test_expensive_templates_are_stopped_and_the_loop_keeps_running(
    env: Env, tmp_path: Path, data: str, stopped: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the limit under test may stop the render: the wall-clock limit (5 s, tested on its
    # own below) would otherwise win on a machine too busy to start the worker, or to give it
    # 2 s of CPU, within 5 s.
    monkeypatch.setattr(templates, "RENDER_TIMEOUT", 120.0)
    monkeypatch.setattr(templates, "RENDER_CPU", 1.0)  # the least RLIMIT_CPU can hold
    async with ticking() as ticks:
        with pytest.raises(TemplateError) as info:
            await _render(env, data, tmp_path)
    took = ticks[-1] - ticks[0]
    assert str(info.value) == f"template local/out.conf: {stopped}"
    assert info.value.recoverable
    # the loop was free the whole time: a render on it would leave one gap as long as the
    # render (the CPU-bound ones take over 1 s); a loaded box only delays the 10 ms ticks
    assert longest_gap(ticks) < max(0.5, took / 2), (longest_gap(ticks), took)
    assert _workers() == []


async def test_a_render_past_the_wall_clock_limit_is_killed(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(templates, "RENDER_CPU", 30.0)
    monkeypatch.setattr(templates, "RENDER_TIMEOUT", 0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TemplateError) as info:
        await _render(
            env, "{% for i in range(100000) %}{{ range(100000)|sum }}{% endfor %}", tmp_path
        )
    assert str(info.value) == (
        "template local/out.conf: rendering took longer than 0.5s and was stopped"
    )
    assert loop.time() - started < 2
    assert _workers() == []


async def test_a_cancelled_render_kills_its_worker(env: Env, tmp_path: Path) -> None:
    task = asyncio.get_running_loop().create_task(
        _render(env, "{% for i in range(100000) %}{{ range(100000)|sum }}{% endfor %}", tmp_path)
    )
    await env.until(_workers, what="a render worker")
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _workers() == []


async def test_renders_run_side_by_side(env: Env, tmp_path: Path) -> None:
    await env.client.var_put("app/config", {"a": "1"})
    texts = await asyncio.gather(
        *(_render(env, f'{{{{ var("app/config").a }}}}-{i}', tmp_path) for i in range(12))
    )
    assert texts == [f"1-{i}" for i in range(12)]


async def test_only_what_the_render_called_is_watched(env: Env, tmp_path: Path) -> None:
    await env.client.var_put("app/config", {"a": "1", "on": ""})
    await env.client.var_put("app/other", {"b": "2"})
    lookups = Lookups(env.client)
    text = await render(
        tpl(
            data='{{ var("app/config").a }}{% if var("app/config").on %}'
            '{{ var("app/other").b }}{{ var("missing").x }}{{ service("db") }}{% endif %}'
        ),
        tmp_path,
        {},
        lookups,
    )
    assert text == "1"  # a missing variable behind a false condition is no error
    assert list(lookups.deps) == [("var", "app/config")]


async def test_the_worker_answers_the_same_objects(env: Env, tmp_path: Path) -> None:
    await env.client.var_put("app/config", {"a": "1"})
    text = await _render(
        env,
        '{{ var("app/config") }} {{ var("app/config")|length }} {{ "a" in var("app/config") }}',
        tmp_path,
    )
    assert text == "<variable app/config items=['a']> 1 True"


# --------------------------------------------------------------------------- template sources


async def test_source_file_relative_or_absolute(env: Env, tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "app.tpl").write_text("user={{ env.USER_NAME }}\n")
    lookups = Lookups(env.client)
    t = tpl(source="tpl/app.tpl")
    assert await render(t, tmp_path, {"USER_NAME": "x"}, lookups) == "user=x\n"
    t = tpl(source=str(tmp_path / "tpl" / "app.tpl"))
    assert await render(t, tmp_path, {"USER_NAME": "z"}, lookups) == "user=z\n"
    with pytest.raises(TemplateError, match=r"cannot read source .*missing\.tpl"):
        await render(tpl(source="missing.tpl"), tmp_path, {}, lookups)


async def test_source_outside_the_task_dir_needs_the_agents_permission(
    env: Env, tmp_path: Path
) -> None:
    host = tmp_path / "host.tpl"
    host.write_text("secret={{ env.USER_NAME }}")
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    (task_dir / "link.tpl").symlink_to(host)
    lookups = Lookups(env.client)
    for source in (str(host), "../host.tpl", "link.tpl"):
        with pytest.raises(TemplateError, match="outside the task's directory"):
            await render(tpl(source=source), task_dir, {"USER_NAME": "y"}, lookups)
    t = tpl(source=str(host))
    got = await render(t, Path("/nonexistent"), {"USER_NAME": "y"}, lookups, host_files=True)
    assert got == "secret=y"


def test_a_symlink_swapped_in_after_the_check_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first look (symlinks resolved) is made while the paths are innocent; the task
    then swaps symlinks in before the open: the opened descriptor is what is checked."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.tpl").write_text("host secret")
    task = tmp_path / "task"
    task.mkdir()
    monkeypatch.setattr(templates, "_realpath", lambda path: path)  # the look before the swap
    # a directory on the way turned into a symlink leading out
    (task / "conf").symlink_to(outside)
    with pytest.raises(TemplateError, match=r"source conf/app\.tpl is outside the task's"):
        read_source("out", "conf/app.tpl", task)
    # the file itself turned into a symlink leading out: never followed
    (task / "app.tpl").symlink_to(outside / "app.tpl")
    with pytest.raises(TemplateError, match="turned into a symlink while it was read"):
        read_source("out", "app.tpl", task)
    # the agent may be allowed to read the machine's files
    assert read_source("out", "conf/app.tpl", task, host_files=True) == "host secret"


def test_source_reading_refuses_odd_files(tmp_path: Path) -> None:
    task = tmp_path / "task"
    (task / "real").mkdir(parents=True)
    (task / "real" / "app.tpl").write_text("inside")
    (task / "conf").symlink_to("real")
    (task / "link.tpl").symlink_to("real/app.tpl")
    # symlinks that stay inside are fine
    assert read_source("out", "conf/app.tpl", task) == "inside"
    assert read_source("out", "link.tpl", task) == "inside"
    os.mkfifo(task / "fifo.tpl")  # would block a plain open() for good
    with pytest.raises(TemplateError, match="is not a regular file"):
        read_source("out", "fifo.tpl", task)
    with pytest.raises(TemplateError, match="is not a regular file"):
        read_source("out", "real", task)
    (task / "big.tpl").write_bytes(b"x" * (templates.MAX_TEMPLATE + 1))
    with pytest.raises(TemplateError, match="larger than 1 MiB"):
        read_source("out", "big.tpl", task)
    (task / "bin.tpl").write_bytes(b"\xff\xfe")
    with pytest.raises(TemplateError, match="cannot read source"):
        read_source("out", "bin.tpl", task)


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize("dest", ["../x", "/etc/passwd", "local/../../x", "a/../b", ""])
def test_destination_outside_the_task_dir_is_refused_by_the_model(dest: str) -> None:
    with pytest.raises(ValidationError, match="inside the task's directory"):
        Template(destination=dest, data="x")


def test_model_needs_one_source_and_a_signal_for_signal_mode() -> None:
    with pytest.raises(ValidationError, match="exactly one of data"):
        Template(destination="a", data="x", source="y")
    with pytest.raises(ValidationError, match="change_signal"):
        Template(destination="a", data="x", change_mode="signal")
    assert (
        Template(destination="a", data="x", change_mode="signal", change_signal="hup").change_signal
        == "SIGHUP"
    )


# --------------------------------------------------------------------------- writing


def test_write_makes_directories_atomically_with_mode_0600(tmp_path: Path) -> None:
    task = tmp_path / "task"
    task.mkdir()
    write_file(task, "local/deep/app.conf", "one\n")
    write_file(task, "local/deep/app.conf", "two\n")
    path = task / "local" / "deep" / "app.conf"
    assert path.read_text() == "two\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert os.listdir(path.parent) == ["app.conf"]  # no temporary file left behind
    assert read_existing(task, "local/deep/app.conf") == "two\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")
def test_written_for_the_tasks_user_and_kept_on_rewrite(tmp_path: Path) -> None:
    """A rendered file is the task user's alone (0600), its directories too (0700); a
    re-render keeps both, even under a umask that would open them."""
    task = tmp_path / "task"
    task.mkdir()
    owner = TaskOwner(70123, 70123)
    old = os.umask(0)
    try:
        write_file(task, "local/db/password", "hunter2", owner)
        path = task / "local" / "db" / "password"
        for _ in range(2):
            st = path.stat()
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (70123, 70123, 0o600)
            for d in (path.parent, path.parent.parent):
                st = d.stat()
                assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (70123, 0o700)
            write_file(task, "local/db/password", "hunter3", owner)
        assert path.read_text() == "hunter3"
        # a container whose user the agent cannot know: readable by any user
        anyone = TaskOwner(0, 0, any_user=True)
        write_file(task, "shared/app.conf", "x", anyone)
        assert stat.S_IMODE((task / "shared" / "app.conf").stat().st_mode) == 0o644
        assert stat.S_IMODE((task / "shared").stat().st_mode) == 0o755
    finally:
        os.umask(old)


def test_a_symlinked_directory_leading_out_is_refused(tmp_path: Path) -> None:
    task = tmp_path / "task"
    task.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (task / "local").symlink_to(outside)
    with pytest.raises(TemplateError, match="leads outside the task directory"):
        write_file(task, "local/app.conf", "secret")
    with pytest.raises(TemplateError, match="leads outside"):
        write_file(task, "local/sub/app.conf", "secret")
    assert list(outside.iterdir()) == []
    # relative links climbing out are resolved too
    (task / "up").symlink_to("../outside")
    with pytest.raises(TemplateError, match="leads outside"):
        write_file(task, "up/app.conf", "secret")
    # a dangling link is not followed to create a directory somewhere else
    (task / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(TemplateError, match="symlink to nothing"):
        write_file(task, "dangling/app.conf", "secret")
    assert not (tmp_path / "nowhere").exists()
    assert list(outside.iterdir()) == []


def test_a_symlink_inside_the_task_dir_is_fine(tmp_path: Path) -> None:
    task = tmp_path / "task"
    (task / "real").mkdir(parents=True)
    (task / "local").symlink_to("real")
    write_file(task, "local/app.conf", "ok")
    assert (task / "real" / "app.conf").read_text() == "ok"


def test_a_symlink_at_the_final_name_is_replaced_not_followed(tmp_path: Path) -> None:
    task = tmp_path / "task"
    (task / "local").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (task / "local" / "app.conf").symlink_to(victim)
    write_file(task, "local/app.conf", "rendered")
    assert victim.read_text() == "untouched"
    assert not (task / "local" / "app.conf").is_symlink()
    assert (task / "local" / "app.conf").read_text() == "rendered"


def test_a_directory_in_the_way_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "local" / "app.conf").mkdir(parents=True)
    with pytest.raises(TemplateError, match="directory is in the way"):
        write_file(tmp_path, "local/app.conf", "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(TemplateError, match="not a directory"):
        write_file(tmp_path, "file/app.conf", "x")


# --------------------------------------------------------------------------- env files


def test_parse_env() -> None:
    text = "# comment\n\nDB_URL=postgres://x?a=b\nexport USER = \"admin\"\nQ='it s'\nEMPTY=\n"
    assert parse_env(text, "env.txt") == {
        "DB_URL": "postgres://x?a=b",
        "USER": "admin",
        "Q": "it s",
        "EMPTY": "",
    }
    with pytest.raises(TemplateError, match=r"template env\.txt: line 2 is not KEY=VALUE") as info:
        parse_env("A=1\nsecret-without-equals\n", "env.txt")
    assert "secret" not in str(info.value)
    with pytest.raises(TemplateError, match="line 1"):
        parse_env("1BAD=x", "env.txt")


# --------------------------------------------------------------------------- the life cycle


def job(templates: list[dict[str, Any]], **task: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job": "web",
            "groups": {
                "g": {
                    "restart": {"attempts": 5, "interval": "1m", "delay": "50ms"},
                    "tasks": {
                        "t": {
                            "driver": "mock",
                            "config": {"run_for": "1h"},
                            "templates": templates,
                            **task,
                        }
                    },
                }
            },
        }
    )


def events(alloc: Allocation) -> list[tuple[str, str]]:
    return [(e.type, e.message) for e in alloc.task_states["t"].events]


async def test_rendered_before_start_env_merged_and_restarted_on_change(env: Env) -> None:
    driver = RecordingMock()
    agent = await env.agent(driver)
    await env.client.var_put("app/config", {"db_url": "postgres://one"})
    await env.client.register_job(
        job(
            [
                {"destination": "local/app.conf", "data": 'url={{ var("app/config").db_url }}\n'},
                {
                    "destination": "secrets/app.env",
                    "data": 'DB_URL={{ var("app/config").db_url }}\nTASK={{ env.PODIUM_TASK_NAME }}\n',
                    "env": True,
                },
            ],
            env={"FROM_SPEC": "yes"},
        )
    )
    alloc = await env.until(lambda: env.running("web"), what="the task to run")
    task_dir = Path(agent.settings.data_dir) / "allocs" / alloc.id / "t"
    assert (task_dir / "local" / "app.conf").read_text() == "url=postgres://one\n"
    started = driver.envs[-1]
    assert started["DB_URL"] == "postgres://one" and started["TASK"] == "t"
    assert started["FROM_SPEC"] == "yes"

    await env.client.var_put("app/config", {"db_url": "postgres://two"})

    def restarted() -> Allocation | None:
        a = env.running("web")
        if driver.envs[-1]["DB_URL"] != "postgres://two":  # started again (renders take a while)
            return None
        return a if a is not None and a.task_states["t"].restarts == 1 else None

    alloc = await env.until(restarted, what="the task restarted after the change")
    assert ("Restart Signaled", "template local/app.conf changed") in events(alloc)
    assert (task_dir / "local" / "app.conf").read_text() == "url=postgres://two\n"
    assert driver.envs[-1]["DB_URL"] == "postgres://two"
    runner = agent.runners[alloc.id]
    assert runner.machine.tasks["t"].window_restarts == 0, "a template restart is free"

    # a write that changes nothing the template renders restarts nothing
    await env.client.var_put("app/unrelated", {"x": "1"})
    same = await env.client.var_put("app/config", {"db_url": "postgres://two"})
    state = runner.templates._tasks["t"]
    await env.until(
        lambda: state.deps[("var", "app/config")].marker == same.modify_index,
        what="the re-render of the unchanged value",
    )
    alloc = env.store.alloc(alloc.id)
    assert alloc is not None and alloc.task_states["t"].restarts == 1
    assert runner.machine.tasks["t"].phase == "running"


async def test_signal_and_noop_modes(env: Env) -> None:
    driver = RecordingMock()
    agent = await env.agent(driver)
    await env.client.var_put("app/a", {"v": "1"})
    await env.client.var_put("app/b", {"v": "1"})
    await env.client.register_job(
        job(
            [
                {
                    "destination": "local/a.conf",
                    "data": '{{ var("app/a").v }}',
                    "change_mode": "signal",
                    "change_signal": "SIGHUP",
                },
                {
                    "destination": "local/b.conf",
                    "data": '{{ var("app/b").v }}',
                    "change_mode": "noop",
                },
            ]
        )
    )
    alloc = await env.until(lambda: env.running("web"), what="the task to run")
    task_dir = Path(agent.settings.data_dir) / "allocs" / alloc.id / "t"
    await env.client.var_put("app/a", {"v": "2"})
    await env.until(lambda: driver.signals, what="SIGHUP sent")
    assert driver.signals == [(f"{alloc.id}/t", "SIGHUP")]
    assert (task_dir / "local" / "a.conf").read_text() == "2"
    await env.client.var_put("app/b", {"v": "2"})
    await env.until(
        lambda: (task_dir / "local" / "b.conf").read_text() == "2", what="b.conf rewritten"
    )
    alloc = env.running("web")
    assert alloc is not None and alloc.task_states["t"].restarts == 0
    assert driver.signals == [(f"{alloc.id}/t", "SIGHUP")]


async def test_a_missing_variable_fails_the_start_recoverably_until_it_exists(env: Env) -> None:
    await env.agent(RecordingMock())
    await env.client.register_job(
        job([{"destination": "local/app.conf", "data": '{{ var("later").v }}'}])
    )

    def failed_once() -> Allocation | None:
        a = env.alloc("web")
        return (
            a
            if a is not None
            and "t" in a.task_states
            and any(t == "Driver Failure" for t, _ in events(a))
            else None
        )

    alloc = await env.until(failed_once, what="a start failure")
    message = next(m for t, m in events(alloc) if t == "Driver Failure")
    assert message == "template local/app.conf: variable 'later' not found"
    assert alloc.client_status != ClientStatus.FAILED
    await env.client.var_put("later", {"v": "now"})
    await env.until(lambda: env.running("web"), what="the retried start to succeed")


async def test_re_render_follows_the_service_catalog(env: Env) -> None:
    agent = await env.agent(RecordingMock())

    def register(i: int) -> None:
        txn = env.store.txn()
        txn.put_service(
            ServiceRegistration(
                id=f"db{i}/db",
                service_name="db",
                job_id="db",
                group="g",
                alloc_id=f"db{i}",
                node_id="n",
                address=f"10.0.0.{i}",
                port=5432,
                healthy=True,
            )
        )
        env.store.commit(txn)

    register(1)
    await env.client.register_job(
        job(
            [
                {
                    "destination": "local/upstreams",
                    "data": '{% for s in service("db") %}{{ s }}\n{% endfor %}',
                    "change_mode": "noop",
                }
            ]
        )
    )
    alloc = await env.until(lambda: env.running("web"), what="the task to run")
    path = Path(agent.settings.data_dir) / "allocs" / alloc.id / "t" / "local" / "upstreams"
    assert path.read_text() == "10.0.0.1:5432\n"
    register(2)
    await env.until(
        lambda: path.read_text() == "10.0.0.1:5432\n10.0.0.2:5432\n", what="the new instance"
    )


async def test_watching_stops_with_the_allocation(env: Env) -> None:
    agent = await env.agent(RecordingMock())
    await env.client.var_put("app/config", {"v": "1"})
    await env.client.register_job(
        job([{"destination": "local/app.conf", "data": '{{ var("app/config").v }}'}])
    )
    alloc = await env.until(lambda: env.running("web"), what="the task to run")
    runner = agent.runners[alloc.id]
    state = runner.templates._tasks["t"]
    await env.until(lambda: state.watchers, what="a watch on app/config")
    watchers = list(state.watchers.values())
    await env.client.stop_job("web")
    await env.until(lambda: all(w.done() for w in watchers), what="the watches to end")
    assert state.loop is None


async def test_a_restarted_agent_acts_on_what_changed_while_it_was_away(env: Env) -> None:
    first = await env.agent(RecordingMock())
    await env.client.var_put("app/config", {"v": "1"})
    await env.client.register_job(
        job([{"destination": "local/app.conf", "data": '{{ var("app/config").v }}'}])
    )
    alloc = await env.until(lambda: env.running("web"), what="the task to run")
    path = Path(first.settings.data_dir) / "allocs" / alloc.id / "t" / "local" / "app.conf"
    await first.stop()  # tasks keep running; nobody watches the variable now
    env.agents.remove(first)
    await env.client.var_put("app/config", {"v": "2"})

    second = await env.agent(RecordingMock())  # same data dir: re-attaches

    def restarted() -> Allocation | None:
        a = env.running("web")
        return a if a is not None and a.task_states["t"].restarts == 1 else None

    alloc = await env.until(restarted, what="the re-attached task restarted")
    assert ("Restart Signaled", "template local/app.conf changed") in events(alloc)
    assert path.read_text() == "2"
    # the restarted task watches the variable again (once it runs: poll, it is not at once)
    await env.until(
        lambda: second.runners[alloc.id].templates._tasks["t"].watchers,
        what="a watch on app/config after the restart",
    )

    # re-attaching again with nothing changed restarts nothing
    await env.until(lambda: second.runners[alloc.id].machine.tasks["t"].phase == "running")
    await second.stop()
    env.agents.remove(second)
    third = await env.agent(RecordingMock())
    runner = third.runners[alloc.id]
    await env.until(lambda: runner.templates._tasks["t"].watchers, what="the re-render")
    assert runner.machine.tasks["t"].phase == "running"
    assert runner.machine.tasks["t"].state.restarts == 1
