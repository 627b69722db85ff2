"""When the DNS port is taken: who holds it, and what to do, said in the agent's warning."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

import pytest

from podium import runtime
from podium.server import dns as dns_module
from podium.server.dns import DnsServer, bind_failure, port_holder
from podium.state import StateStore


@pytest.fixture
def taken() -> Iterator[int]:
    """A UDP port this process holds on the loopback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


async def test_a_taken_port_raises_with_its_errno(taken: int) -> None:
    # uvloop's own bind said OSError("could not bind ...") with no errno: "(None)" in the warning
    with pytest.raises(OSError) as err:
        await DnsServer(StateStore(), "127.0.0.1", taken).start()
    assert err.value.errno is not None and err.value.strerror


async def test_the_holder_is_named(taken: int) -> None:
    assert port_holder("127.0.0.1", taken) is not None
    assert f"(pid {os.getpid()})" in str(port_holder("127.0.0.1", taken))
    with pytest.raises(OSError) as err:
        await DnsServer(StateStore(), "127.0.0.1", taken).start()
    why = bind_failure(f"127.0.0.1:{taken}", err.value)
    assert why.startswith(f"127.0.0.1:{taken} is taken by ")
    assert f"(pid {os.getpid()})" in why


def test_an_unknown_holder_is_another_process() -> None:
    unused = OSError(98, "Address already in use")
    # nobody listens on port 1 here: the holder cannot be named
    assert bind_failure("127.0.0.1:1", unused) == "127.0.0.1:1 is taken by another process"
    other = OSError(13, "Permission denied")
    assert bind_failure("127.0.0.1:53", other) == "cannot listen on 127.0.0.1:53: Permission denied"


async def test_the_default_address_taken_is_a_warning_that_says_what_to_do(
    taken: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(dns_module, "DEFAULT_DNS_ADDR", f"127.0.0.1:{taken}")
    config = runtime.AgentConfig(
        dev=True, data_dir=None, http_addr="127.0.0.1:0", servers=[], name=None, log_level="info"
    )
    with caplog.at_level(logging.WARNING, logger="podium"):
        assert await runtime._start_dns(config, StateStore()) is None
    text = caplog.text
    assert f"DNS is off: 127.0.0.1:{taken} is taken by " in text
    assert f"(pid {os.getpid()})" in text
    assert "--dns-addr" in text and "PODIUM_DNS_ADDR" in text
    assert "(None)" not in text


async def test_an_address_asked_for_and_taken_is_an_error(taken: int) -> None:
    config = runtime.AgentConfig(
        dev=True, data_dir=None, http_addr="127.0.0.1:0", servers=[], name=None, log_level="info"
    )
    config.dns_addr = f"127.0.0.1:{taken}"
    with pytest.raises(OSError, match=rf"127\.0\.0\.1:{taken} is taken by .*--dns-addr"):
        await runtime._start_dns(config, StateStore())


def test_the_cli_names_the_servers_default() -> None:
    from podium.cli.agent import DEFAULT_DNS_ADDR

    assert DEFAULT_DNS_ADDR == dns_module.DEFAULT_DNS_ADDR
    assert not DEFAULT_DNS_ADDR.endswith(":8600")  # Consul's: a machine running it has it taken
