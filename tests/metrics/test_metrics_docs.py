"""docs/metrics.md, docs/grafana/podium-dashboard.json and docs/prometheus.yml against what
a live ``podium agent --dev`` (a real server and agent) exposes: every metric the docs'
tables and the dashboard's expressions name exists, every metric exposed is documented,
and the scrape config's jobs are the ones the dashboard selects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import DevAgent, wait_until, write_job

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\bpodium_[a-z0-9_]+\b")
ROW = re.compile(r"^\| `(podium_[a-z0-9_]+)` \|", re.MULTILINE)

JOB = """
job: docs
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        resources: {cpu: 100, memory: 32, memory_max: 64}
        config: {command: /bin/sleep, args: ["300"]}
"""


def exposed(url: str) -> tuple[set[str], set[str]]:
    """(family names, sample names) of a live /v1/metrics."""
    r = httpx.get(f"{url}/v1/metrics", timeout=30)
    assert r.status_code == 200, r.text
    families, samples = set(), set()
    for family in text_string_to_metric_families(r.text):
        families.add(family.name)
        samples.update(s.name for s in family.samples)
    return families, samples


def test_docs_dashboard_and_scrape_config_name_real_metrics(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    dev_agent.cli("job", "run", "--detach", write_job(tmp_path, JOB), check=True)
    dev_agent.wait_running("docs", 1)
    agent = dev_agent.get("/v1/nodes")[0]["http_addr"]
    # per-task series exist while a task runs and once the agent has sampled it
    wait_until(
        lambda: "podium_agent_task_memory_limit_bytes" in exposed(agent)[1],
        what="the running task's series",
    )
    server_families, server_samples = exposed(dev_agent.addr)
    agent_families, agent_samples = exposed(agent)
    families = server_families | agent_families
    samples = server_samples | agent_samples

    documented = ROW.findall((DOCS / "metrics.md").read_text())
    assert len(documented) == len(set(documented)), "a metric is documented twice"
    missing = sorted(
        n
        for n in documented
        if n not in families and n not in samples and n.removesuffix("_total") not in families
    )
    assert not missing, f"docs/metrics.md names metrics nobody exposes: {missing}"
    undocumented = sorted(
        f for f in families if f not in documented and f"{f}_total" not in documented
    )
    assert not undocumented, f"exposed but not in docs/metrics.md: {undocumented}"

    dashboard = json.loads((DOCS / "grafana" / "podium-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {n for e in exprs for n in NAME.findall(e)}
    unknown = sorted(used - samples)
    assert not unknown, f"the dashboard queries metrics nobody exposes: {unknown}"
    # it covers every subsystem's families
    for prefix in (
        "podium_api_",
        "podium_scheduler_",
        "podium_broker_",
        "podium_store_",
        "podium_agent_task_",
        "podium_process_",
        "podium_nodes",
    ):
        assert any(n.startswith(prefix) for n in used), prefix

    scrape = yaml.safe_load((DOCS / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    defaults = {
        v["name"]: v["current"]["value"]
        for v in dashboard["templating"]["list"]
        if v["type"] == "custom"
    }
    assert set(jobs) == {defaults["server_job"], defaults["agent_job"]}
    assert all(j["metrics_path"] == "/v1/metrics" for j in jobs.values())
