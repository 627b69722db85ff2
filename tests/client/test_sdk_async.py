"""AsyncClient: the same API as Client, awaited."""

from __future__ import annotations

import inspect

import httpx
import pytest

from podium.client import AsyncClient, Client, ServerUnreachable, endpoints
from podium.errors import AmbiguousPrefix

from .samples import EVAL_ID, NODE_ID, Recorder, alloc, dump, job, spec


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(cls).items()
        if callable(fn) and not name.startswith("_") and name not in ("close", "aclose")
    }


def test_both_clients_have_the_same_methods_and_parameters() -> None:
    sync, aio = _public(Client), _public(AsyncClient)
    assert sync.keys() == aio.keys()
    for name, sig in sync.items():
        assert list(sig.parameters) == list(aio[name].parameters), name
        plain = (
            "alloc_logs",
            "events",
            "set_token",
            "heartbeat_unanswered",
        )  # async iterators; setters that send nothing
        fn = getattr(AsyncClient, name)
        streams = inspect.isasyncgenfunction(fn)  # alloc_fs_cat, monitor: async iterators
        assert inspect.iscoroutinefunction(fn) or streams or name in plain, name


async def test_async_reads_and_writes(aclient: AsyncClient, api: Recorder) -> None:
    api.on("GET", "/v1/job/web", {**dump(job()), "summary": {}})
    api.on("POST", "/v1/jobs", {"eval_id": EVAL_ID, "version": 0, "index": 3})
    api.on("GET", "/v1/job/web/allocations", [alloc()])
    api.on("GET", f"/v1/client/node/{NODE_ID}/allocations", {"index": 4})
    async with aclient as c:
        assert (await c.job("web")).spec == spec()
        assert (await c.register_job(spec())).eval_id == EVAL_ID
        result = await c.query(endpoints.job_allocations("web"), index=2, wait="5s")
        assert result.index == api.index and result.value == [alloc()]
        assert api.last.url.params["wait"] == "5s"
        synced = await c.node_sync(NODE_ID, 3, "1m")
        assert synced.index == 4 and synced.allocations == []
    assert c._http.is_closed


async def test_async_error_mapping(aclient: AsyncClient, api: Recorder) -> None:
    api.on("GET", "/v1/evaluation/e", {"error": "ambiguous", "matches": ["e1", "e2"]}, status=400)
    with pytest.raises(AmbiguousPrefix, match="e1, e2"):
        await aclient.evaluation("e")


async def test_async_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    c = AsyncClient("http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    with pytest.raises(ServerUnreachable, match="podium agent --dev"):
        await c.status()
