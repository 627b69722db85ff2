"""Prometheus metrics shared by servers and agents (issue 16).

Each :class:`~podium.server.core.Server` and each :class:`~podium.agent.agent.Agent` owns
one ``prometheus_client.CollectorRegistry`` (never the process-wide default registry: tests
run many servers and agents in one process, and each must expose only its own figures).
This package holds what both sides need and neither owns:

- :mod:`podium.metrics.exposition`: the ``/v1/metrics`` answer, in Prometheus' text format
  (prometheus_client's own writer, no hand-written exposition) or as JSON;
- :mod:`podium.metrics.process`: the process' RSS, open fds and CPU time (prometheus_client's
  process collector under the ``podium_`` namespace), and event-loop lag.

It turns off prometheus_client's ``*_created`` series (process-wide). It knows no other part of Podium, so the server and the agent both may import it.
docs/metrics.md lists every metric.
"""

from __future__ import annotations

from prometheus_client import disable_created_metrics

from podium.metrics.exposition import metrics_answer, registry_json
from podium.metrics.process import LoopLag, add_process_metrics

# No ``*_created`` series beside every counter and histogram: a timestamp per label set
# that doubles the series a scrape stores, for what Prometheus infers from resets anyway.
disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = ["LoopLag", "add_process_metrics", "metrics_answer", "registry_json"]
