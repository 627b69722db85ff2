"""Log streaming: text arrives chunk by chunk; errors surface on the first iteration."""

from __future__ import annotations

import httpx
import pytest

from podium.client import AsyncClient, Client
from podium.errors import NotFound

from .samples import ALLOC_ID


class ChunkStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield from self.chunks

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for c in self.chunks:
            yield c


seen: list[httpx.Request] = []


def handler(request: httpx.Request) -> httpx.Response:
    seen.append(request)
    if request.url.params.get("task") == "missing":
        return httpx.Response(404, json={"error": "no task 'missing' in allocation"})
    return httpx.Response(
        200,
        stream=ChunkStream([b"hello\n", b"wor", b"ld\n"]),
        headers={"content-type": "text/plain; charset=utf-8"},
    )


def test_logs_stream_text_with_the_documented_params() -> None:
    seen.clear()
    c = Client("http://podium.test", transport=httpx.MockTransport(handler))
    chunks = list(c.alloc_logs(ALLOC_ID, "server", type="stderr", origin="end", offset=10))
    assert "".join(chunks) == "hello\nworld\n"
    req = seen[-1]
    assert req.url.path == f"/v1/allocation/{ALLOC_ID}/logs"
    assert dict(req.url.params) == {
        "task": "server",
        "type": "stderr",
        "origin": "end",
        "offset": "10",
    }


def test_follow_never_times_out_reading() -> None:
    seen.clear()
    c = Client("http://podium.test", transport=httpx.MockTransport(handler))
    list(c.alloc_logs(ALLOC_ID, "server", follow=True))
    assert seen[-1].url.params["follow"] == "true"
    assert seen[-1].extensions["timeout"]["read"] is None


def test_log_errors_raise_on_first_iteration() -> None:
    c = Client("http://podium.test", transport=httpx.MockTransport(handler))
    it = c.alloc_logs(ALLOC_ID, "missing")
    with pytest.raises(NotFound, match="no task 'missing'"):
        next(iter(it))


def test_log_arguments_are_checked() -> None:
    c = Client("http://podium.test", transport=httpx.MockTransport(handler))
    with pytest.raises(ValueError, match="stdout"):
        list(c.alloc_logs(ALLOC_ID, "server", type="both"))


async def test_async_logs_stream() -> None:
    seen.clear()
    c = AsyncClient("http://podium.test", transport=httpx.MockTransport(handler))
    chunks = [chunk async for chunk in c.alloc_logs(ALLOC_ID, "server", follow=True)]
    assert "".join(chunks) == "hello\nworld\n"
    with pytest.raises(NotFound):
        async for _ in c.alloc_logs(ALLOC_ID, "missing"):
            pass
    await c.aclose()
