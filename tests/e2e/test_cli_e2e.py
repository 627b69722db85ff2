"""The CLI's conventions against a real dev agent, run as a script runs it (no terminal).

Exit statuses, errors as JSON, one line per change while following a job, the
numbers of a placement failure, and the DNS address: a taken port is named by
its holder, and ``scripts/demo --dns-addr`` serves DNS where it is told.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dnslib import RCODE, DNSRecord

from tests.e2e.conftest import PODIUM, DevAgent, free_port, write_job

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

SLEEPER = """
job: sleeper
groups:
  g:
    count: 2
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sleep, args: ["300"]}
        resources: {cpu: 50, memory: 32}
"""

HUGE = """
job: huge
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sleep, args: ["60"]}
        resources: {memory: 500000000}
"""


def test_a_job_followed_without_a_terminal(dev_agent: DevAgent, tmp_path: Path) -> None:
    path = write_job(tmp_path, SLEEPER)
    assert dev_agent.cli("job", "validate", path, check=True).stdout.startswith(
        f"{path}: job 'sleeper' is valid"
    )
    run = dev_agent.cli("job", "run", path, check=True)
    lines = run.stdout.splitlines()
    assert "\r" not in run.stdout and "\x1b" not in run.stdout
    assert lines[0] == "Job sleeper version 0"
    assert lines[-1] == "All 2 allocations running."
    # one line per change: no line twice, each allocation's running state said once
    assert len(lines) == len(set(lines)), run.stdout
    assert (
        sum(
            re.fullmatch(r"Allocation \w{8} sleeper\.g\[\d\] on .+: running", x) is not None
            for x in lines
        )
        == 2
    )

    status = dev_agent.cli("job", "status", "sleeper", check=True).stdout
    assert "Recent Events" in status and "Started" in status
    listed = dev_agent.cli("job", "status", check=True).stdout
    assert "2 running" in next(x for x in listed.splitlines() if x.startswith("sleeper"))
    as_yaml = yaml.safe_load(dev_agent.cli("job", "status", "sleeper", "-o", "yaml").stdout)
    assert as_yaml["id"] == "sleeper"

    # the server's audit log, in its data dir: the job's registration, made from loopback
    audit = dev_agent.data_dir / "server" / "audit" / "audit.log"
    assert oct(audit.stat().st_mode & 0o777) == "0o600"
    writes = [json.loads(x) for x in audit.read_text().splitlines()]
    posted = [w for w in writes if (w["method"], w["path"]) == ("POST", "/v1/jobs")]
    assert len(posted) == 1 and posted[0]["outcome"] == "allowed", writes
    assert posted[0]["remote"].startswith("127.0.0.1:")


def test_errors_and_exit_statuses(dev_agent: DevAgent, tmp_path: Path) -> None:
    missing = dev_agent.cli("service", "info", "nosuch")
    assert missing.returncode == 1 and "not in the catalog" in missing.stderr
    as_json = dev_agent.cli("job", "status", "nosuch", "-o", "json")
    assert as_json.returncode == 1 and as_json.stdout == ""
    error = json.loads(as_json.stderr)["error"]
    assert (error["kind"], error["status"], error["exit_code"]) == ("not_found", 404, 1)
    usage = dev_agent.cli("job", "status", "--bogus", "-o", "json")
    assert usage.returncode == 2 and json.loads(usage.stderr)["error"]["kind"] == "usage"
    no_file = dev_agent.cli("job", "run", str(tmp_path / "nope.yaml"))
    assert no_file.returncode == 1
    assert "does not exist" in no_file.stderr and "invalid job specification" not in no_file.stderr

    huge = dev_agent.cli("job", "run", write_job(tmp_path, HUGE, "huge.yaml"), timeout=60)
    assert huge.returncode == 3, huge.stdout + huge.stderr
    assert re.search(
        r"1 exhausted memory; asked 500,000,000 MB memory; largest free on an eligible node: "
        r"[\d,]+ MB",
        huge.stdout,
    ), huge.stdout
    assert "asked 500,000,000 MB memory" in dev_agent.cli("job", "status", "huge").stdout

    plan = dev_agent.cli("job", "plan", write_job(tmp_path, SLEEPER, "plan.yaml"))
    assert plan.returncode == 1
    assert '- Group "g" task "t" (raw_exec): memory 32 MB, no limit' in plan.stdout


@pytest.fixture
def held_udp_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_a_dns_address_taken_names_its_holder(tmp_path: Path, held_udp_port: int) -> None:
    cmd = [
        *PODIUM,
        "agent",
        "--dev",
        "--data-dir",
        str(tmp_path / "data"),
        "--http-addr",
        f"127.0.0.1:{free_port()}",
        "--dns-addr",
        f"127.0.0.1:{held_udp_port}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"127.0.0.1:{held_udp_port} is taken by " in out, out
    assert f"(pid {os.getpid()})" in out
    assert "--dns-addr" in out and "(None)" not in out


def _read_until(proc: subprocess.Popen[bytes], marker: str, timeout: float) -> str:
    """What the process printed up to ``marker``, read from the pipe as it comes (no sleeps;
    os.read, so nothing waits in a Python buffer that select() cannot see)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while marker.encode() not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {marker!r} from scripts/demo:\n{seen.decode()}")
            if sel.select(left):
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"scripts/demo ended before {marker!r}:\n{seen.decode()}")
                seen += chunk
    return seen.decode(errors="replace")


def test_the_demo_serves_dns_where_it_is_told(tmp_path: Path) -> None:
    dns_port = free_port()
    api = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PODIUM_ADDR": api,
        "PYTHON": sys.executable,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    env.pop("PODIUM_DNS_ADDR", None)
    proc = subprocess.Popen(
        ["scripts/demo", "--dns-addr", f"127.0.0.1:{dns_port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out = _read_until(proc, "Press Ctrl-C", timeout=180)
        assert f"DNS for the service catalog: 127.0.0.1:{dns_port}" in out
        answer = DNSRecord.parse(
            DNSRecord.question("nosuch.service.podium").send("127.0.0.1", dns_port, timeout=5)
        )
        assert answer.header.rcode == RCODE.NXDOMAIN  # the catalog answered, on that port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
