"""Renders waiting on the server for their lookups hold no render slot: a slow server does
not stall the node's other templates (and so task starts)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from podium.agent import templates
from podium.agent.templates import _render_in_worker


class HangingLookups:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def fetch(self, paths: list[str], names: list[str]) -> dict[str, Any]:
        if paths or names:
            self.waiting += 1
            await self.release.wait()  # a slow / unresponsive server (client timeout 60 s)
        return {"vars": {p: {"items": {"k": "v"}} for p in paths}, "services": {}}

    def use(self, used: Any) -> None:
        pass


async def _timed(coro: Any, seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        return await coro


async def test_slow_fetches_do_not_starve_other_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "MAX_WORKERS", 2)
    templates._SLOTS.clear()
    slow = HangingLookups()
    blockers = [
        asyncio.create_task(_render_in_worker(f"a{i}", '{{ var("app/x").k }}', {}, slow))
        for i in range(2)
    ]
    async with asyncio.timeout(30):  # both children started and asked for app/x
        while slow.waiting < 2:
            await asyncio.sleep(0.01)
    # an unrelated template with no lookups at all: the blockers never end by themselves, so
    # a render that waited for their slots would wait forever (20 s: a busy box is slow to
    # start a worker, never that slow)
    try:
        text = await _timed(_render_in_worker("plain", "hello", {}, slow), 20)
        starved = False
    except TimeoutError:
        starved = True
    slow.release.set()
    results = await asyncio.gather(*blockers, return_exceptions=True)
    assert results == ["v", "v"]
    assert not starved, "a template without lookups waited >20s for a slot held by fetches"
    assert text == "hello"
