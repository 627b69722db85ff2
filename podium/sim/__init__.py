"""``podium sim``: a real server and thousands of simulated agents, in one process or several.

The server is the real one (API, store, broker, scheduler workers, plan
applier).  Each simulated node is a real :class:`podium.agent.agent.Agent`
running the ``mock`` driver: it registers, heartbeats, holds a blocking query
on its allocations and reports task states through the SDK and the HTTP routes
an agent on another machine uses.  Only the transport differs: by default agents
reach the in-process FastAPI app through httpx's ASGI transport (no sockets),
while the API probe that measures latency goes through a real socket from
another process; with ``agent_procs`` the agents run in worker processes
(:mod:`.agents`) that use real HTTP on loopback too.

What is shared to keep 5,000 agents cheap: one SDK client, one mock driver,
no files (an in-memory local state, no allocation directories, no log
rotation) and a longer heartbeat TTL for big clusters.

Modules: :mod:`.nodes` (node shapes and the simulated agent),
:mod:`.workload` (jobs), :mod:`.probe` (API latency), :mod:`.agents` (a worker
process of agents), :mod:`.invariants`,
:mod:`.run` (the whole run and its figures).
"""

from podium.sim.run import SimConfig, simulate

__all__ = ["SimConfig", "simulate"]
