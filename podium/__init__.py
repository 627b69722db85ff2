"""Podium: a workload orchestrator.

A job file says what to run; servers place it, agents run it, restart it and
stop it cleanly.  ``podium.Client`` is the Python SDK over the HTTP API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from podium.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    # The SDK is imported lazily so that `import podium` stays cheap for the
    # agent's hot paths and for tools that only need the models.
    if name in ("Client", "AsyncClient"):
        from podium import client

        return getattr(client, name)
    raise AttributeError(name)
