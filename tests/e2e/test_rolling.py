"""End to end on a real dev agent: rolling updates of an HTTP service, watched by a prober.

The tasks are ``python -m http.server`` processes; their http checks feed the
catalog and the deployment's health.  A prober thread keeps asking the catalog
for healthy instances and requesting each one, as a load balancer would.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from dnslib import DNSRecord

from tests.e2e.conftest import DevAgent, as_json, free_port, wait_until, write_job


def web_job(
    version: str,
    *,
    count: int = 6,
    path: str = "/",
    canary: int = 0,
    healthy_deadline: str = "20s",
    interval: str = "300ms",
    serve: str = "local",
) -> str:
    return f"""
job: web
update:
  max_parallel: 2
  canary: {canary}
  min_healthy_time: 1s
  healthy_deadline: {healthy_deadline}
  progress_deadline: 60s
  auto_revert: true
groups:
  web:
    count: {count}
    network: {{ports: {{http: {{}}}}}}
    services:
      - name: web
        port: http
        tags: [v{version}]
        checks:
          - {{name: root, type: http, path: "{path}", interval: {interval}, timeout: 300ms}}
    tasks:
      server:
        driver: raw_exec
        shutdown_delay: 500ms
        kill_timeout: 2s
        env: {{VERSION: "{version}"}}
        config:
          command: /bin/sh
          args: ["-c", "mkdir -p {serve} && echo ok > {serve}/ok && exec {sys.executable} -m http.server $PODIUM_PORT_http --bind 127.0.0.1 --directory {serve}"]
"""


@dataclass
class Prober:
    """Asks the catalog for healthy instances of ``web`` and requests each, in a loop."""

    addr: str
    counts: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self._stop.is_set():
                try:
                    found = http.get(
                        f"{self.addr}/v1/service/web", params={"healthy": "true"}
                    ).json()
                except httpx.HTTPError as exc:
                    self.failures.append(f"catalog: {exc!r}")
                    continue
                self.counts.append(len(found))
                for inst in found:
                    url = f"http://{inst['address']}:{inst['port']}/"
                    try:
                        r = http.get(url)
                        self.requests += 1
                        if r.status_code != 200:
                            self.failures.append(f"{url}: HTTP {r.status_code}")
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{url} ({inst['alloc_id'][:8]}): {exc!r}")
                time.sleep(0.02)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[DevAgent]:
    a = DevAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "agent.log",
        extra_args=["--dns-addr", f"127.0.0.1:{free_port()}"],
    )
    try:
        a.start()
        yield a
    finally:
        a.cleanup()


def deployment(agent: DevAgent, version: int) -> dict[str, Any] | None:
    for dep in agent.get("/v1/deployments", job="web"):
        if dep["job_version"] == version:
            return dict(dep)
    return None


def wait_deployment(agent: DevAgent, version: int, status: str, timeout: float = 60) -> Any:
    return wait_until(
        lambda: (d := deployment(agent, version)) is not None and d["status"] == status and d,
        timeout=timeout,
        what=f"deployment of version {version} {status}",
    )


def versions_running(agent: DevAgent) -> list[str]:
    out = []
    for a in agent.running("web"):
        spec = agent.get("/v1/job/web/versions")
        by_version = {v["version"]: v["spec"] for v in spec}
        out.append(
            by_version[a["job_version"]]["groups"]["web"]["tasks"]["server"]["env"]["VERSION"]
        )
    return sorted(out)


def test_rolling_update_keeps_four_healthy_and_never_sends_to_a_dead_instance(
    agent: DevAgent, tmp_path: Path
) -> None:
    agent.cli("job", "run", "--detach", write_job(tmp_path, web_job("1")), check=True)
    wait_deployment(agent, 0, "successful")
    prober = Prober(agent.addr)
    prober.start()
    try:
        wait_until(lambda: prober.counts and prober.counts[-1] == 6, what="the prober to see 6")
        run = agent.cli("job", "run", write_job(tmp_path, web_job("2"), "v2.yaml"), timeout=90)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "successful" in run.stdout and "Progress" in run.stdout
        wait_until(lambda: prober.counts[-1] == 6, what="six healthy again")
    finally:
        prober.stop()
    assert versions_running(agent) == ["2"] * 6
    assert min(prober.counts) >= 4, prober.counts
    assert not prober.failures, prober.failures[:5]
    assert prober.requests > 50
    history = agent.cli("job", "history", "web", check=True).stdout
    assert "2" in history


def test_update_that_never_gets_healthy_fails_and_reverts(agent: DevAgent, tmp_path: Path) -> None:
    agent.cli("job", "run", "--detach", write_job(tmp_path, web_job("1", count=3)), check=True)
    wait_deployment(agent, 0, "successful")
    bad = web_job("2", count=3, path="/no-such-page", healthy_deadline="3s")
    started = time.monotonic()
    run = agent.cli("job", "run", write_job(tmp_path, bad, "bad.yaml"), timeout=90)
    assert run.returncode == 1, run.stdout + run.stderr
    failed = wait_deployment(agent, 1, "failed")
    assert time.monotonic() - started < 20
    assert "not healthy within healthy_deadline (3s)" in failed["status_description"]
    assert "rolling back to version 0" in failed["status_description"]
    wait_deployment(agent, 2, "successful")
    assert versions_running(agent) == ["1"] * 3
    healthy = agent.get("/v1/service/web", healthy="true")
    assert len(healthy) == 3 and {tuple(i["tags"]) for i in healthy} == {("v1",)}


def test_canary_promote_and_fail(agent: DevAgent, tmp_path: Path) -> None:
    agent.cli(
        "job", "run", "--detach", write_job(tmp_path, web_job("1", count=3, canary=1)), check=True
    )
    wait_deployment(agent, 0, "successful")
    run = agent.cli(
        "job", "run", write_job(tmp_path, web_job("2", count=3, canary=1), "v2.yaml"), timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "wait for promotion" in run.stdout
    assert versions_running(agent) == ["1", "1", "1", "2"]
    dep = deployment(agent, 1)
    assert dep is not None
    agent.cli("deployment", "promote", dep["id"][:8], check=True)
    wait_deployment(agent, 1, "successful")
    assert versions_running(agent) == ["2", "2", "2"]

    agent.cli(
        "job",
        "run",
        "--detach",
        write_job(tmp_path, web_job("3", count=3, canary=1), "v3.yaml"),
        check=True,
    )
    wait_until(lambda: len(agent.running("web")) == 4, what="the v3 canary")
    dep = deployment(agent, 2)
    assert dep is not None
    out = agent.cli("deployment", "fail", dep["id"][:8], check=True).stdout
    assert "failed by a person" in out
    wait_until(lambda: len(agent.running("web")) == 3, what="the canary gone")
    assert versions_running(agent) == ["2", "2", "2"]


CRASHY = """
job: flaky
groups:
  g:
    restart: {attempts: 5, interval: 1m, delay: 0s, mode: fail}
    services:
      - name: flaky
        checks:
          - name: always-fails
            type: script
            command: /bin/sh
            args: ["-c", "echo not ready; exit 2"]
            interval: 200ms
            timeout: 200ms
            on_failure: restart
            failures_before_restart: 3
            grace: 0s
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sleep, args: ["1000"]}
"""


def test_failing_check_restarts_the_task_and_says_why(agent: DevAgent, tmp_path: Path) -> None:
    agent.cli("job", "run", "--detach", write_job(tmp_path, CRASHY), check=True)
    (alloc,) = wait_until(
        lambda: [a for a in agent.allocs("flaky") if a["task_states"]["t"]["restarts"] >= 1],
        what="a restart",
    )
    events = alloc["task_states"]["t"]["events"]
    why = [e["message"] for e in events if "always-fails" in e["message"]]
    assert why and "failed 3 times" in why[0] and "not ready" in why[0], events
    status = agent.cli("alloc", "status", alloc["id"][:8], check=True).stdout
    assert "check always-fails failed 3 times" in status


def test_dns_drops_an_instance_within_one_check_interval(agent: DevAgent, tmp_path: Path) -> None:
    dns_port = int(agent.extra_args[1].rsplit(":", 1)[1])
    agent.cli(
        "job",
        "run",
        "--detach",
        write_job(tmp_path, web_job("1", count=2, path="/ok", interval="1s")),
        check=True,
    )
    wait_deployment(agent, 0, "successful")

    def srv_ports() -> list[int]:
        raw = DNSRecord.question("web.service.podium", "SRV").send("127.0.0.1", dns_port, timeout=2)
        return sorted(rr.rdata.port for rr in DNSRecord.parse(raw).rr)

    assert len(srv_ports()) == 2
    victim = agent.running("web")[0]
    ok = wait_until(
        lambda: next((tmp_path / "data").rglob(f"{victim['id']}/server/local/ok")),
        what="the served ok file",
    )
    ok.unlink()
    removed = time.monotonic()
    wait_until(lambda: len(srv_ports()) == 1, timeout=5, interval=0.05, what="DNS to drop it")
    # one check interval (1s) plus the check's own timeout and the report batch
    assert time.monotonic() - removed < 1.0 + 0.3 + 0.5
    assert srv_ports() == sorted(
        i["port"] for i in as_json(agent.cli("service", "info", "web", "--healthy", "-o", "json"))
    )
