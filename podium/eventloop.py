"""Which asyncio event loop Podium's long-running processes use: uvloop.

uvloop (libuv) runs the same asyncio code with less overhead per callback,
socket read and timer.  Measured with ``podium sim`` at 5,000 nodes
(bench/RESULTS.md): the API latency a client sees during a placement storm
fell from p50 45 ms / p99 0.8 s to p50 5 ms / p99 0.19 s.  ``PODIUM_LOOP=asyncio``
picks the standard loop instead (to rule the loop out when chasing a bug).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop, unless ``PODIUM_LOOP=asyncio`` or uvloop is not
    installed (it does not build on Windows)."""
    if os.environ.get("PODIUM_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)
