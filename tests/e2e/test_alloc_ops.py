"""Day-two operations end to end (issue 16): a real ``podium agent --dev``, real tasks, and
the real CLI: ``alloc restart|signal|stop|fs``, ``job restart`` and ``monitor``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from podium.client import AsyncClient, Client
from tests.e2e.conftest import PODIUM, DevAgent, wait_until, write_job

# A task that says it is ready once its USR1 trap is set, writes a file, and plants a
# symlink to /etc/shadow in its own directory (what alloc fs must never follow), and a
# hard link (which could be one to a file from outside: refused too).
TRAPPER = """
job: {name}
groups:
  g:
    count: {count}
    restart: {{attempts: 0, mode: fail}}
    tasks:
      t:
        driver: raw_exec
        config:
          command: /bin/sh
          args:
            - -c
            - >-
              trap 'echo got-usr1 >> $PODIUM_TASK_DIR/signals.txt' USR1;
              echo hello from the task > $PODIUM_TASK_DIR/out.txt;
              ln -sf /etc/shadow $PODIUM_TASK_DIR/shadow;
              echo twice > $PODIUM_TASK_DIR/linked; ln $PODIUM_TASK_DIR/linked $PODIUM_TASK_DIR/hard;
              touch $PODIUM_TASK_DIR/ready;
              while true; do sleep 0.1; done
"""


def run_job(agent: DevAgent, tmp: Path, name: str, count: int) -> list[dict[str, Any]]:
    text = TRAPPER.format(name=name, count=count)
    agent.cli("job", "run", write_job(tmp, text, f"{name}.yaml"), check=True)
    return agent.wait_running(name, count)


def task(alloc: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = alloc["task_states"]["t"]
    return state


def ready(agent: DevAgent, alloc_id: str) -> None:
    """Until the task has set its trap (it touches ``ready`` after)."""
    wait_until(
        lambda: agent.cli("alloc", "fs", alloc_id, "t/ready", "--stat").returncode == 0,
        what="the task to be ready",
    )


def test_alloc_restart_in_place_counts_nothing(dev_agent: DevAgent, tmp_path: Path) -> None:
    [alloc] = run_job(dev_agent, tmp_path, "rs", 1)
    aid, pid = alloc["id"], task(alloc)["pid"]
    # attempts: 0 with mode fail: a restart the policy counted would fail the allocation
    for round_ in range(2):
        out = dev_agent.cli("alloc", "restart", aid[:8], check=True)
        assert f"Restarting t of allocation {aid[:8]}" in out.stdout

        def restarted(old: int = pid) -> dict[str, Any] | None:
            a = dev_agent.get(f"/v1/allocation/{aid}")
            s = task(a)
            return a if s["state"] == "running" and s["pid"] not in (None, old) else None

        after = wait_until(restarted, what=f"the task to run again (round {round_})")
        assert after["client_status"] == "running" and after["desired_status"] == "run"
        assert task(after)["restarts"] == 0, "an operator's restart is not counted"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        pid = task(after)["pid"]
    events = [(e["type"], e["message"]) for e in task(after)["events"]]
    assert events.count(("Restart Signaled", "restart requested by an operator")) == 2
    assert [a["id"] for a in dev_agent.running("rs")] == [aid], "restarted in place"
    # usage and lookup errors say what is wrong
    bad = dev_agent.cli("alloc", "restart", aid, "t", "--all-tasks")
    assert bad.returncode == 2 and "not both" in bad.stderr
    bad = dev_agent.cli("alloc", "restart", aid, "nope")
    assert bad.returncode == 1 and "no task 'nope'" in bad.stderr
    out = dev_agent.cli("alloc", "restart", aid, "--all-tasks", "-o", "json", check=True)
    assert json.loads(out.stdout) == {"restarted": ["t"]}
    # the agent's own endpoint takes writes only as JSON: a browser's cross-site form
    # (which needs no preflight) cannot restart a task
    node = dev_agent.get(f"/v1/node/{after['node_id']}")
    form = httpx.post(
        f"{node['http_addr']}/v1/client/allocation/{aid}/restart", data={"task": "t"}, timeout=10
    )
    assert form.status_code == 415 and "application/json" in form.json()["error"]


def test_alloc_signal_reaches_a_task_that_traps_it(dev_agent: DevAgent, tmp_path: Path) -> None:
    [alloc] = run_job(dev_agent, tmp_path, "sig", 1)
    aid, pid = alloc["id"], task(alloc)["pid"]
    ready(dev_agent, aid)
    out = dev_agent.cli("alloc", "signal", aid, "t", "-s", "SIGUSR1", check=True)
    assert f"Sent SIGUSR1 to t of allocation {aid[:8]}" in out.stdout

    def trapped() -> bool:
        r = dev_agent.cli("alloc", "fs", aid, "t/signals.txt")
        return r.returncode == 0 and "got-usr1" in r.stdout

    wait_until(trapped, what="the task's trap to write signals.txt")
    a = dev_agent.get(f"/v1/allocation/{aid}")
    assert task(a)["pid"] == pid and task(a)["state"] == "running", "the task lives on"
    assert any(e["type"] == "Signaling" and "SIGUSR1" in e["message"] for e in task(a)["events"])
    bad = dev_agent.cli("alloc", "signal", aid, "-s", "SIGNOPE")
    assert bad.returncode == 1 and "SIGNOPE" in bad.stderr

    # alloc fs -f follows the file: the next signal's line shows up while it runs
    with follow_proc(dev_agent, "alloc", "fs", aid, "t/signals.txt", "-f") as lines:
        _until_line(lines, "got-usr1")
        dev_agent.cli("alloc", "signal", aid, "-s", "usr1", check=True)
        _until_line(lines, "got-usr1")


def test_alloc_stop_replaces_it_and_the_job_keeps_its_count(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    allocs = run_job(dev_agent, tmp_path, "st", 2)
    victim = allocs[0]["id"]
    out = dev_agent.cli("alloc", "stop", victim, check=True)
    assert "is stopping; evaluation" in out.stdout
    assert "All 2 allocations running." in out.stdout, out.stdout
    running = dev_agent.wait_running("st", 2)
    assert victim not in {a["id"] for a in running}
    replacement = next(a for a in running if a["previous_allocation"] == victim)
    old = dev_agent.get(f"/v1/allocation/{victim}")
    assert old["desired_status"] == "stop" and old["next_allocation"] == replacement["id"]
    assert "stopped by an operator" in old["desired_description"]
    wait_until(
        lambda: dev_agent.get(f"/v1/allocation/{victim}")["client_status"] == "complete",
        what="the stopped allocation's tasks to be killed",
    )
    # --detach: the evaluation, at once; -o json: the API's answer
    other = next(a["id"] for a in running if a["id"] != replacement["id"])
    out = dev_agent.cli("alloc", "stop", other, "--detach", "-o", "json", check=True)
    answer = json.loads(out.stdout)
    ev = dev_agent.get(f"/v1/evaluation/{answer['eval_id']}")
    assert ev["triggered_by"] == "alloc-stop" and ev["job_id"] == "st"
    dev_agent.wait_running("st", 2)
    again = dev_agent.cli("alloc", "stop", victim)
    assert again.returncode == 1 and "already stopped" in again.stderr


def test_job_restart_in_batches(dev_agent: DevAgent, tmp_path: Path) -> None:
    allocs = run_job(dev_agent, tmp_path, "jr", 3)
    pids = {a["id"]: task(a)["pid"] for a in allocs}
    refused = dev_agent.cli("job", "restart", "jr")  # no terminal to confirm on
    assert refused.returncode == 2 and "--yes" in refused.stderr
    out = dev_agent.cli(
        "job", "restart", "jr", "--batch-size", "2", "--batch-wait", "200ms", "--yes", check=True
    )
    assert "Batch 1 of 2" in out.stdout and "Batch 2 of 2" in out.stdout
    assert out.stdout.index("Batch 1 of 2") < out.stdout.index("==> Waiting")
    assert out.stdout.index("==> Waiting") < out.stdout.index("Batch 2 of 2")
    assert "Job jr: 3 allocations restarted." in out.stdout
    after = dev_agent.wait_running("jr", 3)
    assert {a["id"] for a in after} == set(pids), "in place: the same allocations"
    for a in after:
        assert task(a)["pid"] != pids[a["id"]], "every task was restarted"
        assert task(a)["restarts"] == 0

    # --reschedule: every allocation stopped and replaced, a batch at a time
    out = dev_agent.cli(
        "job",
        "restart",
        "jr",
        "--reschedule",
        "--batch-size",
        "50%",
        "--yes",
        "-o",
        "json",
        check=True,
    )
    done = json.loads(out.stdout)["restarted"]
    assert {d["alloc_id"] for d in done} == set(pids)
    replaced = dev_agent.wait_running("jr", 3)
    assert {a["id"] for a in replaced} == {d["replaced_by"] for d in done}
    assert not {a["id"] for a in replaced} & set(pids)
    job = dev_agent.get("/v1/job/jr")
    assert job["spec"]["groups"]["g"]["count"] == 3 and job["summary"]["g"]["running"] == 3


def test_alloc_fs_lists_and_cats_within_the_alloc_dir_only(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    [alloc] = run_job(dev_agent, tmp_path, "fs", 1)
    aid = alloc["id"]
    ready(dev_agent, aid)
    top = dev_agent.cli("alloc", "fs", aid, check=True).stdout
    assert "alloc/" in top and "t/" in top
    listing = dev_agent.cli("alloc", "fs", aid, "t", check=True).stdout
    assert "out.txt" in listing and "shadow -> /etc/shadow" in listing
    assert dev_agent.cli("alloc", "fs", aid, "t/out.txt", check=True).stdout == (
        "hello from the task\n"
    )
    stat = json.loads(dev_agent.cli("alloc", "fs", aid, "t/out.txt", "--stat", "-o", "json").stdout)
    assert stat["type"] == "file" and stat["size"] == len("hello from the task\n")
    logs = json.loads(dev_agent.cli("alloc", "fs", aid, "alloc/logs", "-o", "json").stdout)
    assert "t.stdout" in {e["name"] for e in logs["entries"]}

    refusals = {
        "t/shadow": ("symlink", 403),
        "../../../../etc/shadow": ("'..'", 400),
        "t/../../x": ("'..'", 400),
        "/etc/shadow": ("absolute", 400),
        "t/secrets/podium.token": ("secrets", 403),
        "t/missing": ("does not exist", 404),
        "t/hard": ("hard links", 403),
    }
    with Client(dev_agent.addr) as client:
        for path, (word, status) in refusals.items():
            r = client._http.get(f"/v1/allocation/{aid}/fs/cat", params={"path": path})
            assert r.status_code == status and word in r.json()["error"], (path, r.text)
            cli = dev_agent.cli("alloc", "fs", aid, path)
            assert cli.returncode == 1 and word in cli.stderr, (path, cli.stderr)
            assert "root:" not in cli.stdout
        # a listing through the symlink is refused too, not just reading it
        r = client._http.get(f"/v1/allocation/{aid}/fs/ls", params={"path": "t/shadow"})
        assert r.status_code in (400, 403)
        assert b"".join(client.alloc_fs_cat(aid, "t/out.txt", offset=6, limit=4)) == b"from"


def _read_lines(proc: subprocess.Popen[str], into: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.put(line)


def _until_line(lines: queue.Queue[str], want: str, timeout: float = 20.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if want in line:
            return seen
    raise AssertionError(f"no line with {want!r} in {timeout}s; saw: {seen[-20:]}")


def monitor_proc(
    agent: DevAgent, *args: str
) -> contextlib.AbstractContextManager[queue.Queue[str]]:
    """``podium monitor ARGS`` running, its lines in a queue; stopped on leaving."""
    return follow_proc(agent, "monitor", *args)


@contextlib.contextmanager
def follow_proc(agent: DevAgent, *args: str) -> Iterator[queue.Queue[str]]:
    """``podium ARGS`` running (a command that follows), its lines in a queue."""
    env = {**os.environ, "PODIUM_ADDR": agent.addr, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [*PODIUM, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc, lines), daemon=True).start()
    try:
        yield lines
    finally:
        proc.terminate()
        proc.wait(10)


def test_monitor_shows_live_lines_at_its_level(dev_agent: DevAgent, tmp_path: Path) -> None:
    [alloc] = run_job(dev_agent, tmp_path, "mon", 1)
    aid = alloc["id"]
    with monitor_proc(dev_agent, "--log-level", "info") as lines:
        _until_line(lines, "monitoring this server at level info")
        dev_agent.cli("alloc", "restart", aid, check=True)
        seen = _until_line(lines, f"allocation {aid}: restart of its running tasks requested")
        # the agent (in this process) logs its part too; the debug line is not shown
        seen += _until_line(lines, f"alloc {aid} task t: restart requested by an operator")
        assert not any("relaying a restart" in line for line in seen), seen
        assert all(" DEBUG " not in line for line in seen), seen
    # at debug, the debug line is there, as JSON with --json
    with monitor_proc(dev_agent, "--log-level", "debug", "--json") as lines:
        first = json.loads(_until_line(lines, "monitoring this server")[-1])
        assert first["message"] == "monitoring this server at level debug"
        dev_agent.cli("alloc", "restart", aid, check=True)
        record = json.loads(_until_line(lines, f"relaying a restart of allocation {aid}")[-1])
        assert record["level"] == "DEBUG" and record["logger"] == "podium.server.routes.alloc_ops"
    # the agent's log, relayed by the server (--node-id)
    node = alloc["node_id"]
    with monitor_proc(dev_agent, "--node-id", node[:8]) as lines:
        _until_line(lines, "monitoring agent")
    # the server's own stderr stayed at its level: no debug line went there
    assert "relaying a restart" not in dev_agent.logs()


def alloc_pid(alloc: dict[str, Any]) -> int:
    return int(task(alloc)["pid"])


async def test_the_async_sdk_does_the_same(dev_agent: DevAgent, tmp_path: Path) -> None:
    [alloc] = run_job(dev_agent, tmp_path, "aio", 1)
    aid = alloc["id"]
    async with AsyncClient(dev_agent.addr) as client:
        listing = await client.alloc_fs_ls(aid, "t")
        assert "out.txt" in {e.name for e in listing.entries}
        shadow = next(e for e in listing.entries if e.name == "shadow")
        assert (shadow.type, shadow.link_target) == ("symlink", "/etc/shadow")
        assert (await client.alloc_fs_stat(aid, "t/out.txt")).type == "file"
        data = b"".join([c async for c in client.alloc_fs_cat(aid, "t/out.txt")])
        assert data == b"hello from the task\n"
        records = client.monitor("info")
        first = await anext(records)
        assert first["message"] == "monitoring this server at level info"
        answer = await client.restart_alloc(aid, "t")
        assert answer.restarted == ["t"]
        want = f"allocation {aid}: restart of t requested"
        async with asyncio.timeout(20):
            async for record in records:
                if record["message"] == want:
                    break
        await records.aclose()
        # a task being restarted is not running: a signal now is refused (409) until it is
        async with asyncio.timeout(20):
            while (await client.allocation(aid)).task_states["t"].pid in (None, alloc_pid(alloc)):
                await asyncio.sleep(0.1)
        sig = await client.signal_alloc(aid, "cont")
        assert (sig.signal, sig.tasks) == ("SIGCONT", ["t"])
        stopped = await client.stop_alloc(aid)
        assert stopped.eval_id
    dev_agent.wait_running("aio", 1)


def test_alloc_stop_of_a_system_job_replaces_it_on_the_same_node(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    text = TRAPPER.format(name="sys", count=1).replace("job: sys\n", "job: sys\ntype: system\n")
    text = text.replace("    count: 1\n", "")
    dev_agent.cli("job", "run", write_job(tmp_path, text, "sys.yaml"), check=True)
    [alloc] = dev_agent.wait_running("sys", 1)
    dev_agent.cli("alloc", "stop", alloc["id"], check=True)
    [again] = wait_until(
        lambda: [a for a in dev_agent.running("sys") if a["id"] != alloc["id"]],
        what="the system job's replacement",
    )
    assert again["node_id"] == alloc["node_id"]
    assert again["previous_allocation"] == alloc["id"]
