"""The live log hub behind ``podium monitor`` (podium.logstream): levels, a bounded buffer
per listener with a ``dropped N lines`` note, the handler attached only while someone
listens, and the process's own log output left as it was."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading

import pytest

from podium import logstream
from podium.logstream import LogHub


@pytest.fixture
def root() -> logging.Logger:
    """A private logger tree standing for the root: a stderr-like handler at INFO."""
    tree = logging.getLogger("test-logstream-root")
    tree.handlers.clear()
    tree.setLevel(logging.INFO)
    tree.propagate = False
    return tree


def make_hub(root: logging.Logger) -> LogHub:
    hub = LogHub(root)
    hub.podium = logging.getLogger("test-logstream-root.podium")
    hub.podium.setLevel(logging.NOTSET)
    return hub


async def test_levels_and_attach_only_while_listening(root: logging.Logger) -> None:
    hub = make_hub(root)
    log = logging.getLogger("test-logstream-root.podium.x")
    assert hub not in root.handlers
    info = hub.attach(logging.INFO)
    warn = hub.attach(logging.WARNING)
    assert hub in root.handlers
    log.info("an info line")
    log.debug("a debug line")
    log.warning("a warning")
    got_info = [r["message"] for r in info.take()]
    got_warn = [r["message"] for r in warn.take()]
    assert got_info == ["an info line", "a warning"]
    assert got_warn == ["a warning"]
    hub.detach(info)
    hub.detach(warn)
    assert hub not in root.handlers, "nobody listens: the handler is off"


async def test_a_slow_listener_loses_lines_and_is_told(root: logging.Logger) -> None:
    hub = make_hub(root)
    log = logging.getLogger("test-logstream-root.podium.x")
    slow = hub.attach(logging.INFO, size=3)
    try:
        for i in range(10):
            log.info("line %d", i)  # never waits, whatever the listener does
        batch = await asyncio.wait_for(slow.next_batch(), 5)
        assert batch[0]["message"].startswith("dropped 7 lines")
        assert batch[0]["level"] == "WARNING"
        assert [r["message"] for r in batch[1:]] == ["line 0", "line 1", "line 2"]
        log.info("after")
        assert [r["message"] for r in await asyncio.wait_for(slow.next_batch(), 5)] == ["after"]
    finally:
        hub.detach(slow)


async def test_debug_listener_leaves_the_process_output_alone(root: logging.Logger) -> None:
    hub = make_hub(root)
    out = io.StringIO()
    stderr_like = logging.StreamHandler(out)
    root.addHandler(stderr_like)
    log = logging.getLogger("test-logstream-root.podium.x")
    listener = hub.attach(logging.DEBUG)
    try:
        log.debug("for the monitor only")
        log.info("for both")
        assert [r["message"] for r in listener.take()] == ["for the monitor only", "for both"]
        assert out.getvalue().splitlines() == ["for both"], "stderr saw the debug line"
    finally:
        hub.detach(listener)
    # put back: the podium logger's level and the handler's filters
    assert hub.podium.level == logging.NOTSET
    assert not stderr_like.filters
    log.debug("nobody sees this")
    assert out.getvalue().splitlines() == ["for both"]


async def test_records_from_another_thread_arrive(root: logging.Logger) -> None:
    hub = make_hub(root)
    log = logging.getLogger("test-logstream-root.podium.x")
    listener = hub.attach(logging.INFO)
    try:
        t = threading.Thread(target=log.info, args=("from a thread",))
        t.start()
        t.join()
        batch = await asyncio.wait_for(listener.next_batch(), 5)
        assert [r["message"] for r in batch] == ["from a thread"]
    finally:
        hub.detach(listener)


async def test_the_response_streams_ndjson_and_ends_after_its_duration() -> None:
    hub = logstream.hub()
    response = hub.response(logging.INFO, "a test", duration=0.3)
    sent: list[bytes] = []

    async def receive() -> dict[str, str]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            assert isinstance(body, bytes)
            sent.append(body)
            if len(sent) == 1:
                logging.getLogger("podium.test").info("a line after the start")

    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET"}
    await asyncio.wait_for(response(scope, receive, send), 10)
    lines = [json.loads(x) for x in b"".join(sent).splitlines()]
    assert lines[0]["message"] == "monitoring a test at level info"
    assert any(x["message"] == "a line after the start" for x in lines[1:])
    assert hub.listeners == 0, "the listener is detached when the stream ends"


def test_parse_level() -> None:
    assert logstream.parse_level("DEBUG") == logging.DEBUG
    with pytest.raises(ValueError, match="debug, info, warning, error"):
        logstream.parse_level("loud")


async def test_a_monitor_that_goes_away_is_detached_at_once(tmp_path: object) -> None:
    """Through a real uvicorn and the whole app: a client that leaves an idle monitor (at
    error level nothing comes) takes its listener with it, and the level is put back."""
    import httpx
    import uvicorn

    from podium.server.api import create_app
    from podium.server.core import Server
    from podium.state import StateStore
    from tests.e2e.conftest import free_port

    hub = logstream.hub()
    podium_level = logging.getLogger("podium").level
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(Server(StateStore())), port=port, log_level="warning", lifespan="off"
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for level in ("error", "debug"):
                params = {"log_level": level}
                async with client.stream("GET", "/v1/agent/monitor", params=params) as r:
                    assert r.status_code == 200
                    first = json.loads(await anext(r.aiter_lines()))
                    assert first["message"] == f"monitoring this server at level {level}"
                    assert hub.listeners == 1
                async with asyncio.timeout(10):
                    while hub.listeners:
                        await asyncio.sleep(0.01)
        assert logging.getLogger("podium").level == podium_level
    finally:
        server.should_exit = True
        await serving
