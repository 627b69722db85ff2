"""The largest values a job file may hold, and why each is what it is.

A job spec is input from anyone who can reach the API.  Every count, size and duration
in it is bounded here, so that no value can make the scheduler, the store or an agent do
unbounded work (issue 14: ``count: 1000000000`` grew a server to 23 GB).  The limits are
far above what a real job needs; docs/api.md lists them with their reasons.  The one a
cluster may want to move, the number of instances, is the server's ``--max-count``
(:data:`DEFAULT_MAX_COUNT`, at most :data:`COUNT_CEILING`), checked at registration.
"""

from __future__ import annotations

DAY = 86400.0

COUNT_CEILING = 1_000_000
"""The most any count-like field may say (count, canary, max_parallel, max_per_node), and the
largest ``--max-count`` a server accepts: Nomad's C1M placed a million containers in all."""
DEFAULT_MAX_COUNT = 10_000
"""The server's default ``--max-count``: instances of one group, and of one job in all.
Kubernetes' scale tests stop at 10,000 pods; at 1,000 placements per evaluation
(scheduler.generic.MAX_PLACEMENTS) it is ten bounded plans."""

MAX_GROUPS = 100
"""Groups per job: every evaluation reconciles each group."""
MAX_TASKS = 50
"""Tasks per group: they share one node and start together."""
MAX_SERVICES = 50
"""Services per group (each instance registers each one in the catalog and DNS)."""
MAX_CHECKS = 20
"""Health checks per service (each runs on the agent at its interval)."""
MAX_TEMPLATES = 50
"""Templates per task (each re-renders when what it reads changes)."""
MAX_TEMPLATE_CHARS = 1 << 20
"""Inline template text: what the agent renders at most (agent.templates.MAX_TEMPLATE)."""
MAX_RULES = 64
"""Constraints, affinities or spreads in one list: each is evaluated per node per placement."""
MAX_VOLUMES = 32
"""Volumes a group asks for; mounts a task makes."""
MAX_DEVICE_REQUESTS = 8
"""Device requests of one task."""
MAX_DEVICES = 64
"""Instances one device request may ask for."""
MAX_SPREAD_TARGETS = 100
MAX_PORTS = 64
"""Port labels per group (each dynamic one takes a port on the node)."""
MAX_MAP_ENTRIES = 256
"""Entries of ``meta``."""
MAX_ENV_ENTRIES = 1024
"""Entries of a task's ``env``."""
MAX_KEY_CHARS = 256
"""A key of ``meta`` or ``env``."""
MAX_VALUE_CHARS = 32 * 1024
"""A value of ``meta`` or ``env`` (Linux takes at most 128 KiB per environment string)."""
MAX_TEXT_CHARS = 4096
"""Free text: a check's command, path or name, a user, a datacenter, an attribute."""
MAX_LIST_ITEMS = 256
"""Tags, check arguments, datacenters."""

MAX_CPU_MHZ = 1 << 40
"""Far past any machine (a request that fits nowhere is a placement failure that says so);
bounded so that a million instances' sum stays a 64-bit integer (SQLite, JSON clients)."""
MAX_MEMORY_MB = 1 << 40
"""As MAX_CPU_MHZ."""
MAX_LOG_FILES = 100
MAX_LOG_FILE_MB = 10_240
"""A task's logs on the node take at most ``max_files`` x ``max_file_size`` per stream."""

MAX_ATTEMPTS = 10_000
"""Restart or reschedule attempts in one interval."""
MAX_POLICY_INTERVAL = 30 * DAY
"""Restart and reschedule windows, and the longest reschedule ``max_delay``."""
MAX_DELAY = DAY
"""One restart or reschedule delay, a check's grace, a deployment's timings."""
MAX_KILL_TIMEOUT = DAY
"""The agent caps what it honours further (another part of issue 14)."""
MIN_CHECK_INTERVAL = 0.05
"""A check every 50 ms is already busy; shorter would be a loop on the agent."""
MAX_FAILURES = 1000
"""``failures_before_restart``."""
