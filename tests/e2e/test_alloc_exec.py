"""``podium alloc exec`` end to end: a real `podium agent --dev` (server and agent), real
tasks of the three drivers, the SDK's sessions over real WebSockets, and the CLI on a pty.

One agent serves the whole module (three long-running jobs), so each test pays only for
its own sessions.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from podium.client import AsyncClient, Client
from podium.client.execws import AsyncExecSession
from podium.errors import NotFound
from podium.models.execproto import GRANT_HEADER
from tests.e2e.conftest import PODIUM, DevAgent, free_port, wait_until, write_job

IMAGE = "podium-test/busybox:1"
pytestmark = pytest.mark.xdist_group("alloc_exec")  # one worker, one agent for the module

JOB = f"""
job: exe
groups:
  raw:
    tasks:
      t:
        driver: raw_exec
        config:
          command: /bin/sleep
          args: ["3600"]
  iso:
    tasks:
      t:
        driver: exec
        env: {{LD_PRELOAD: /nonexistent/podium-preload.so, KEPT: yes}}
        config:
          command: /bin/sh
          args: ["-c", "echo task-was-here > marker; exec sleep 3600"]
  box:
    tasks:
      c:
        driver: docker
        resources: {{memory: 32}}
        config:
          image: {IMAGE}
          command: /bin/sh
          args: ["-c", "echo in-container > /tmp/m; exec sleep 3600"]
"""


def _docker_ready() -> str | None:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
        client.images.get(IMAGE)
    except Exception as exc:
        return f"no Docker Engine with {IMAGE}: {exc}"
    return None


DOCKER_SKIP = _docker_ready()
READ_TIMEOUT = 2.0


class Env:
    def __init__(self, agent: DevAgent, allocs: dict[str, str]) -> None:
        self.agent = agent
        self.allocs = allocs
        """Group -> its allocation's id."""

    def client(self) -> Client:
        return Client(self.agent.addr)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("the exec driver (and exec's nsenter) needs root")
    tmp = tmp_path_factory.mktemp("exec")
    agent = DevAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=tmp / "data",
        log_path=tmp / "agent.log",
        # the edge's deadline for a request to arrive: a session must outlive it
        extra_args=["--request-read-timeout", str(READ_TIMEOUT)],
    )
    try:
        agent.start()
        job = JOB if DOCKER_SKIP is None else JOB.split("  box:")[0]
        agent.cli("job", "run", write_job(tmp, job), check=True, timeout=90)
        groups = 3 if DOCKER_SKIP is None else 2
        running = agent.wait_running("exe", groups, timeout=90)
        yield Env(agent, {a["group"]: a["id"] for a in running})
    finally:
        agent.cleanup()


async def _read_until(session: AsyncExecSession, token: bytes, seen: bytearray) -> None:
    it = session.__aiter__()

    async def more() -> None:
        while token not in seen:
            out = await it.__anext__()
            seen.extend(out.data)

    await asyncio.wait_for(more(), 20)


# ------------------------------------------------------------------ raw_exec
def test_output_apart_exit_code_and_context(env: Env) -> None:
    with env.client() as c:
        done = c.exec(
            env.allocs["raw"],
            ["/bin/sh", "-c", 'echo out; echo err >&2; echo "$PODIUM_TASK_NAME"; pwd; exit 3'],
        )
    assert done.exit_code == 3
    lines = done.stdout.decode().splitlines()
    assert lines[:2] == ["out", "t"]
    assert lines[2].endswith(f"{env.allocs['raw']}/t")  # the task's directory
    assert done.stderr == b"err\n"


def test_stdin_is_piped_and_closed(env: Env) -> None:
    with env.client() as c:
        done = c.exec(env.allocs["raw"], ["/bin/sh", "-c", "cat; echo end"], "t", stdin=b"piped\n")
    assert (done.exit_code, done.stdout) == (0, b"piped\nend\n")


def test_large_input_through_cat_comes_back_whole(env: Env) -> None:
    """Stdin goes in small frames beside the reading: a command that answers as it reads
    (``cat``) never waits on a client that is still sending (4 MiB, past every buffer)."""
    data = os.urandom(4 * 2**20)
    with env.client() as c:
        done = c.exec(env.allocs["raw"], ["cat"], stdin=data)
    assert done.exit_code == 0 and done.stdout == data


async def test_tty_is_a_pts_and_resize_reaches_it(env: Env) -> None:
    async with AsyncClient(env.agent.addr) as c:
        session = await c.exec_session(env.allocs["raw"], ["/bin/sh"], tty=True)
        async with session:
            await session.resize(30, 100)
            await session.send_stdin(b"tty; stty size\n")
            seen = bytearray()
            await _read_until(session, b"30 100", seen)
            assert b"/dev/pts/" in seen
            await session.resize(41, 123)
            await session.send_stdin(b"stty size; exit 6\n")
            await _read_until(session, b"41 123", seen)
            async for _ in session:
                pass
            assert session.exit_code == 6


def test_an_idle_session_outlives_the_request_read_deadline(env: Env) -> None:
    """The server's and the agent's edge close a connection whose request does not arrive
    in time; an upgraded one is no longer a request (it was cut after 10 s)."""
    with env.client() as c:
        session = c.exec_session(env.allocs["raw"], ["/bin/sh", "-c", "read x; echo got $x"])
        with session:
            time.sleep(READ_TIMEOUT * 1.5)  # idle on purpose, past the deadline
            session.send_stdin(b"late\n")
            assert b"".join(o.data for o in session) == b"got late\n"
            assert session.exit_code == 0


def test_a_client_that_leaves_ends_the_command(env: Env) -> None:
    with env.client() as c:
        session = c.exec_session(env.allocs["raw"], ["/bin/sh", "-c", "echo $$; exec sleep 1000"])
        first = next(iter(session))
        pid = int(first.data.split()[0])
        assert Path(f"/proc/{pid}").exists()
        session.close()
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), what=f"pid {pid} to end")


def test_unknown_task_and_bad_command_are_clear(env: Env) -> None:
    with env.client() as c, pytest.raises(NotFound, match=r"no task 'nope' \(tasks: t\)"):
        c.exec(env.allocs["raw"], ["true"], "nope")
    url = env.agent.addr.replace("http://", "ws://")
    with pytest.raises(InvalidStatus) as bad:
        connect(f"{url}/v1/allocation/{env.allocs['raw']}/exec?command=ls")
    assert bad.value.response.status_code == 400
    assert b"command is not JSON" in (bad.value.response.body or b"")


def test_agent_runs_nothing_without_the_servers_grant(env: Env) -> None:
    """Whoever reaches the agent's port directly (plain HTTP here) gets a 403."""
    node = env.agent.get("/v1/nodes")[0]
    agent_url = env.agent.get(f"/v1/node/{node['id']}")["http_addr"].replace("http://", "ws://")
    alloc = env.allocs["raw"]
    url = f"{agent_url}/v1/client/allocation/{alloc}/exec?task=t&command=%5B%22id%22%5D"
    for headers in ({}, {GRANT_HEADER: f"{int(time.time()) + 30}.abc.{'0' * 64}"}):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers)
        assert refused.value.response.status_code == 403
        assert b"grant" in (refused.value.response.body or b"")


def test_a_browser_page_of_another_origin_is_refused(env: Env) -> None:
    url = env.agent.addr.replace("http://", "ws://")
    cmd = "%5B%22id%22%5D"
    with pytest.raises(InvalidStatus) as refused:
        connect(
            f"{url}/v1/allocation/{env.allocs['raw']}/exec?command={cmd}",
            origin="http://evil.example",  # type: ignore[arg-type]
        )
    assert refused.value.response.status_code == 403


# ------------------------------------------------------------------ exec driver
def test_exec_driver_command_sees_the_tasks_world(env: Env) -> None:
    script = "id -u; cat marker; ls /proc | grep -c '^[0-9]'; tr '\\0' ' ' < /proc/1/cmdline"
    with env.client() as c:
        done = c.exec(env.allocs["iso"], ["/bin/sh", "-c", script])
    assert done.exit_code == 0, done.stderr
    uid, marker, pids, init = done.stdout.decode().split("\n", 3)
    assert 70000 <= int(uid) <= 79999  # the allocation's own uid, not root
    assert marker == "task-was-here"  # the task's own directory
    assert int(pids) < 10  # the task's pid namespace: its few processes only
    assert "podium-init" in init  # pid 1 is the task's init


async def test_exec_driver_tty_shell_with_job_control(env: Env) -> None:
    """An interactive shell in the task's pid namespace: its terminal's session is made
    there, so job control works (else: "Cannot set tty process group", exit 2)."""
    async with AsyncClient(env.agent.addr) as c:
        session = await c.exec_session(env.allocs["iso"], ["/bin/sh", "-i"], tty=True)
        async with session:
            await session.resize(30, 100)
            await session.send_stdin(b"stty size; id -u; exit 6\n")
            seen = bytearray()
            await _read_until(session, b"30 100", seen)
            async for out in session:
                seen.extend(out.data)
            assert session.exit_code == 6, bytes(seen)
            assert b"Cannot set tty process group" not in seen
            assert b"\n7" in seen  # uid 70000-79999, not root


PRELOAD_WARNING = b"cannot be preloaded"


def test_exec_driver_helpers_never_load_a_jobs_preload(env: Env) -> None:
    """``nsenter``, ``setpriv`` and friends run as root: a job's LD_PRELOAD (a library its
    task could write) is not in their environment; the command gets it back as the task's
    user.  So the loader tries it once, for the command's own ``sh``, and never as root."""
    with env.client() as c:
        done = c.exec(env.allocs["iso"], ["/bin/sh", "-c", 'echo "$LD_PRELOAD $KEPT"'])
    assert done.exit_code == 0
    assert done.stdout == b"/nonexistent/podium-preload.so yes\n"
    assert done.stderr.count(PRELOAD_WARNING) == 1, done.stderr


def test_exec_driver_task_start_never_loads_a_jobs_preload(env: Env) -> None:
    """The same for the task's own start (the shim, ``unshare``, the namespace's init,
    ``mount``, ``pivot_root``, ``setpriv`` are root): only its ``sh`` and the ``sleep`` it
    becomes try the library, as the task's user."""
    with env.client() as c:
        log = "".join(c.alloc_logs(env.allocs["iso"], "t", type="stderr")).encode()
    assert log.count(PRELOAD_WARNING) == 2, log


def test_exec_driver_command_cannot_become_root(env: Env) -> None:
    with env.client() as c:
        done = c.exec(env.allocs["iso"], ["/bin/sh", "-c", "cat /proc/self/status"])
    status = done.stdout.decode()
    assert "NoNewPrivs:\t1" in status
    assert "CapEff:\t0000000000000000" in status


# ------------------------------------------------------------------ docker
@pytest.mark.skipif(DOCKER_SKIP is not None, reason=DOCKER_SKIP or "")
def test_docker_exec_output_and_exit_code(env: Env) -> None:
    with env.client() as c:
        done = c.exec(
            env.allocs["box"], ["sh", "-c", "cat /tmp/m; echo e >&2; cat; exit 5"], stdin=b"fed\n"
        )
    assert done.exit_code == 5
    assert done.stdout == b"in-container\nfed\n"
    assert done.stderr == b"e\n"


@pytest.mark.skipif(DOCKER_SKIP is not None, reason=DOCKER_SKIP or "")
async def test_docker_exec_tty_and_resize(env: Env) -> None:
    async with AsyncClient(env.agent.addr) as c:
        session = await c.exec_session(env.allocs["box"], ["sh"], tty=True)
        async with session:
            await session.send_stdin(b"tty\n")
            seen = bytearray()
            await _read_until(session, b"/dev/pts/", seen)
            await session.resize(33, 111)
            await session.send_stdin(b"stty size; exit 4\n")
            await _read_until(session, b"33 111", seen)
            async for _ in session:
                pass
            assert session.exit_code == 4


@pytest.mark.skipif(DOCKER_SKIP is not None, reason=DOCKER_SKIP or "")
def test_docker_exec_ends_when_the_client_leaves(env: Env) -> None:
    import docker  # type: ignore[import-untyped]

    engine = docker.from_env(timeout=10)
    name = f"podium-c-{env.allocs['box']}"

    def execs() -> list[str]:
        top = engine.api.top(name)
        return [" ".join(p) for p in top["Processes"] if "sleep 1234" in " ".join(p)]

    with env.client() as c:
        session = c.exec_session(env.allocs["box"], ["sh", "-c", "echo up; exec sleep 1234"])
        assert next(iter(session)).data == b"up\n"
        assert execs(), "the exec runs in the container"
        session.close()
    wait_until(lambda: not execs(), what="the exec's process to end")


# ------------------------------------------------------------------ the CLI
def _cli_env(env: Env) -> dict[str, str]:
    return {**os.environ, "PODIUM_ADDR": env.agent.addr, "NO_COLOR": "1"}


def test_cli_without_tty_pipes_and_passes_the_exit_code(env: Env) -> None:
    done = subprocess.run(
        [*PODIUM, "alloc", "exec", env.allocs["raw"][:8], "t", "--", "sh", "-c", "cat; exit 3"],
        input=b"abc\n",
        capture_output=True,
        env=_cli_env(env),
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (3, b"abc\n"), done.stderr
    wrong = subprocess.run(
        [*PODIUM, "alloc", "exec", env.allocs["raw"], "nope", "--", "true"],
        capture_output=True,
        env=_cli_env(env),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert wrong.returncode == 1 and b"no task 'nope'" in wrong.stderr


def _pty_read_until(fd: int, token: bytes, seen: bytearray, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while token not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {token!r}; got {bytes(seen)!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen.extend(os.read(fd, 4096))
            except OSError:  # EIO: the CLI exited
                raise AssertionError(f"the CLI ended before {token!r}: {bytes(seen)!r}") from None


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_cli_tty_interactive_with_resize(env: Env) -> None:
    """The CLI on a terminal (a pty the test holds): the shell it opens has a terminal of
    the same size, follows a resize of ours, and its exit code is the CLI's."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, its stdin a terminal
        os.environ.update(_cli_env(env))
        os.execv(PODIUM[0], [*PODIUM, "alloc", "exec", "-t", env.allocs["raw"], "--", "/bin/sh"])
    try:
        _set_size(fd, 30, 100)
        seen = bytearray()
        os.write(fd, b"tty; stty size\n")
        _pty_read_until(fd, b"30 100", seen)
        assert b"/dev/pts/" in seen
        _set_size(fd, 41, 123)  # the kernel sends the CLI SIGWINCH; it tells the server
        wait_until(lambda: _size_echo(fd, b"41 123"), timeout=20, what="the resize")
        os.write(fd, b"exit 7\n")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 7
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


def _size_echo(fd: int, want: bytes) -> bool:
    """Ask the remote shell its size (once more) and see whether ``want`` came back."""
    out = bytearray()
    os.write(fd, b"stty size; echo done-$((6*7))\n")
    _pty_read_until(fd, b"done-42", out)  # the echoed line says $((6*7)): this is output
    return want in out
