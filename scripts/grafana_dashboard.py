"""Write docs/grafana/podium-dashboard.json: Podium's ready Grafana dashboard.

The dashboard is generated (run ``python scripts/grafana_dashboard.py``) so that its
panels stay short to read and review here; tests/metrics/test_metrics_docs.py checks
that every metric its expressions name is one a live server or agent exposes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "podium-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SERVERS = 'job=~"$server_job"'
AGENTS = 'job=~"$agent_job"'

# (row title, [(panel title, unit, [(expr, legend)])])
ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    (
        "API",
        [
            (
                "Requests per second by route",
                "reqps",
                [
                    (
                        f"sum by (route) (rate(podium_api_requests_total{{{SERVERS}}}[5m]))",
                        "{{route}}",
                    )
                ],
            ),
            (
                "Errors per second (4xx, 5xx)",
                "reqps",
                [
                    (
                        f'sum by (route, status) (rate(podium_api_requests_total{{{SERVERS},status=~"[45].."}}[5m]))',
                        "{{route}} {{status}}",
                    )
                ],
            ),
            (
                "Request latency p99 by route",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le, route) "
                        f"(rate(podium_api_request_duration_seconds_bucket{{{SERVERS}}}[5m])))",
                        "{{route}}",
                    )
                ],
            ),
        ],
    ),
    (
        "Scheduling",
        [
            (
                "Evaluations and placements per second",
                "ops",
                [
                    (
                        f"sum(rate(podium_scheduler_evaluations_total{{{SERVERS}}}[1m]))",
                        "evaluations",
                    ),
                    (
                        f"sum(rate(podium_scheduler_placements_total{{{SERVERS}}}[1m]))",
                        "placements",
                    ),
                    (
                        f"sum(rate(podium_scheduler_plan_rejections_total{{{SERVERS}}}[1m]))",
                        "plan rejections",
                    ),
                ],
            ),
            (
                "Scheduling and plan-commit latency",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(podium_scheduler_evaluation_duration_seconds_bucket{{{SERVERS}}}[5m])))",
                        "schedule p99",
                    ),
                    (
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(podium_scheduler_evaluation_duration_seconds_bucket{{{SERVERS}}}[5m])))",
                        "schedule p50",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(podium_applier_commit_duration_seconds_bucket{{{SERVERS}}}[5m])))",
                        "plan commit p99",
                    ),
                ],
            ),
            (
                "Broker queues",
                "short",
                [(f"sum by (state) (podium_broker_evaluations{{{SERVERS}}})", "{{state}}")],
            ),
        ],
    ),
    (
        "Store",
        [
            (
                "Commit and durable-write latency p99",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le, instance) "
                        f"(rate(podium_store_commit_duration_seconds_bucket{{{SERVERS}}}[5m])))",
                        "commit {{instance}}",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le, instance) "
                        f"(rate(podium_store_write_duration_seconds_bucket{{{SERVERS}}}[5m])))",
                        "write (fsync) {{instance}}",
                    ),
                ],
            ),
            (
                "Store files",
                "bytes",
                [
                    (f"podium_store_size_bytes{{{SERVERS}}}", "database {{instance}}"),
                    (f"podium_store_wal_size_bytes{{{SERVERS}}}", "WAL {{instance}}"),
                ],
            ),
            (
                "Commit index and leader",
                "short",
                [
                    (f"max(podium_store_index{{{SERVERS}}})", "index"),
                    (f"podium_server_leader{{{SERVERS}}}", "leader {{instance}}"),
                ],
            ),
        ],
    ),
    (
        "Cluster",
        [
            (
                "Nodes by status",
                "short",
                [
                    (f"max by (status) (podium_nodes{{{SERVERS}}})", "{{status}}"),
                    (
                        f"sum(increase(podium_heartbeat_missed_total{{{SERVERS}}}[1h]))",
                        "missed heartbeats (1h)",
                    ),
                ],
            ),
            (
                "Allocations by client status",
                "short",
                [
                    (
                        f"max by (client_status) (podium_allocations{{{SERVERS}}})",
                        "{{client_status}}",
                    )
                ],
            ),
            (
                "Jobs and deployments by status",
                "short",
                [
                    (f"max by (status) (podium_jobs{{{SERVERS}}})", "jobs {{status}}"),
                    (
                        f"max by (status) (podium_deployments{{{SERVERS}}})",
                        "deployments {{status}}",
                    ),
                ],
            ),
        ],
    ),
    (
        "Agents",
        [
            (
                "Tasks by state",
                "short",
                [(f"sum by (state) (podium_agent_tasks{{{AGENTS}}})", "{{state}}")],
            ),
            (
                "Task starts, failures, restarts, re-attachments",
                "ops",
                [
                    (f"sum(rate(podium_agent_task_starts_total{{{AGENTS}}}[5m]))", "starts"),
                    (
                        f"sum(rate(podium_agent_task_start_failures_total{{{AGENTS}}}[5m]))",
                        "start failures",
                    ),
                    (f"sum(rate(podium_agent_task_restarts_total{{{AGENTS}}}[5m]))", "restarts"),
                    (
                        f"sum(rate(podium_agent_task_reattached_total{{{AGENTS}}}[5m]))",
                        "re-attached",
                    ),
                ],
            ),
            (
                "Task start latency p99",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(podium_agent_task_start_duration_seconds_bucket{{{AGENTS}}}[5m])))",
                        "p99",
                    )
                ],
            ),
            (
                "Top 10 tasks by memory",
                "bytes",
                [
                    (
                        f"topk(10, podium_agent_task_memory_bytes{{{AGENTS}}})",
                        "{{job_id}}/{{group}}/{{task}} {{alloc_id}}",
                    ),
                ],
            ),
            (
                "Top 10 tasks by CPU (cores)",
                "short",
                [
                    (
                        f"topk(10, podium_agent_task_cpu_cores{{{AGENTS}}})",
                        "{{job_id}}/{{group}}/{{task}} {{alloc_id}}",
                    )
                ],
            ),
            (
                "Memory use against limits (tasks with one)",
                "percentunit",
                [
                    (
                        f"podium_agent_task_memory_bytes{{{AGENTS}}} / "
                        f"podium_agent_task_memory_limit_bytes{{{AGENTS}}}",
                        "{{job_id}}/{{task}} {{alloc_id}}",
                    )
                ],
            ),
        ],
    ),
    (
        "Processes (servers and agents)",
        [
            (
                "Resident memory",
                "bytes",
                [("podium_process_resident_memory_bytes", "{{job}} {{instance}}")],
            ),
            (
                "CPU (cores) and open fds",
                "short",
                [
                    ("rate(podium_process_cpu_seconds_total[1m])", "cpu {{job}} {{instance}}"),
                    ("podium_process_open_fds", "fds {{job}} {{instance}}"),
                ],
            ),
            (
                "Event-loop lag p99",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le, job, instance) "
                        "(rate(podium_process_event_loop_lag_seconds_bucket[5m])))",
                        "{{job}} {{instance}}",
                    )
                ],
            ),
        ],
    ),
]


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    pid = 1
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "type": "row",
                "id": pid,
                "title": row_title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        pid += 1
        y += 1
        for i, (title, unit, targets) in enumerate(row_panels):
            panels.append(
                {
                    "type": "timeseries",
                    "id": pid,
                    "title": title,
                    "datasource": DS,
                    "gridPos": {"x": (i % 3) * 8, "y": y + (i // 3) * 8, "w": 8, "h": 8},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                    "targets": [
                        {
                            "refId": chr(ord("A") + n),
                            "datasource": DS,
                            "expr": expr,
                            "legendFormat": legend,
                        }
                        for n, (expr, legend) in enumerate(targets)
                    ],
                }
            )
            pid += 1
        y += ((len(row_panels) + 2) // 3) * 8
    return {
        "title": "Podium",
        "uid": "podium-overview",
        "description": "Podium servers and agents (docs/metrics.md lists every metric).",
        "tags": ["podium"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                {
                    "name": "server_job",
                    "label": "Server scrape job",
                    "type": "custom",
                    "query": "podium-servers",
                    "current": {"text": "podium-servers", "value": "podium-servers"},
                },
                {
                    "name": "agent_job",
                    "label": "Agent scrape job",
                    "type": "custom",
                    "query": "podium-agents",
                    "current": {"text": "podium-agents", "value": "podium-agents"},
                },
            ]
        },
        "panels": panels,
    }


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
