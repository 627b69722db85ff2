"""The catalog's DNS server: real UDP and TCP queries against it, on a free port."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from podium.models import ServiceRegistration, registration_id
from podium.server.dns import DnsServer, Resolver
from podium.state import StateStore


def register(
    store: StateStore,
    alloc: str,
    address: str,
    port: int,
    *,
    name: str = "web",
    healthy: bool = True,
    tags: tuple[str, ...] = ("v1",),
) -> None:
    txn = store.txn()
    txn.put_service(
        ServiceRegistration(
            id=registration_id(alloc, name),
            service_name=name,
            job_id="web",
            group="g",
            alloc_id=alloc,
            node_id="n1",
            address=address,
            port=port,
            tags=list(tags),
            healthy=healthy,
        )
    )
    store.commit(txn)


@pytest.fixture
def store() -> StateStore:
    store = StateStore()
    register(store, "a1", "10.0.0.1", 21001, tags=("v1", "primary"))
    register(store, "a2", "10.0.0.2", 21002)
    register(store, "a3", "10.0.0.3", 21003, healthy=False)
    register(store, "a4", "10.0.0.1", 21004)  # a second instance on the first node
    register(store, "d1", "10.0.0.9", 5432, name="db", healthy=False)
    return store


@pytest.fixture
async def dns(store: StateStore) -> AsyncIterator[DnsServer]:
    server = DnsServer(store, "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def ask(dns: DnsServer, name: str, qtype: str = "A", tcp: bool = False) -> DNSRecord:
    """A real query over the loopback, from a thread (dnslib's client blocks)."""
    q = DNSRecord.question(name, qtype)
    raw = await asyncio.to_thread(q.send, "127.0.0.1", dns.port, tcp=tcp, timeout=2)
    return DNSRecord.parse(raw)


def answers(reply: DNSRecord, rtype: int | None = None) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr if rtype is None or rr.rtype == rtype)


async def test_a_records_are_the_healthy_instances_addresses(dns: DnsServer) -> None:
    reply = await ask(dns, "web.service.podium")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa
    assert answers(reply, QTYPE.A) == ["10.0.0.1", "10.0.0.2"]  # a3 is unhealthy; no repeat
    assert all(rr.ttl == 0 for rr in reply.rr)


async def test_srv_records_carry_ports_and_resolvable_targets(dns: DnsServer) -> None:
    reply = await ask(dns, "web.service.podium", "SRV")
    srv = sorted((rr.rdata.port, str(rr.rdata.target)) for rr in reply.rr)
    assert srv == [
        (21001, "0a000001.addr.podium."),
        (21002, "0a000002.addr.podium."),
        (21004, "0a000001.addr.podium."),
    ]
    extra = {str(rr.rname): str(rr.rdata) for rr in reply.ar}
    assert extra == {"0a000001.addr.podium.": "10.0.0.1", "0a000002.addr.podium.": "10.0.0.2"}
    target = await ask(dns, "0a000002.addr.podium")
    assert answers(target) == ["10.0.0.2"]


async def test_tags_filter_and_the_rfc2782_form(dns: DnsServer) -> None:
    tagged = await ask(dns, "primary.web.service.podium", "SRV")
    assert [rr.rdata.port for rr in tagged.rr] == [21001]
    rfc = await ask(dns, "_web._tcp.service.podium", "SRV")
    assert sorted(rr.rdata.port for rr in rfc.rr) == [21001, 21002, 21004]
    rfc_tag = await ask(dns, "_web._primary.service.podium", "SRV")
    assert [rr.rdata.port for rr in rfc_tag.rr] == [21001]
    assert (await ask(dns, "nosuch.web.service.podium")).header.rcode == RCODE.NXDOMAIN


async def test_unknown_is_nxdomain_and_unhealthy_is_empty(dns: DnsServer) -> None:
    unknown = await ask(dns, "nope.service.podium")
    assert unknown.header.rcode == RCODE.NXDOMAIN and not unknown.rr
    assert unknown.auth and unknown.auth[0].rtype == QTYPE.SOA
    sick = await ask(dns, "db.service.podium")
    assert sick.header.rcode == RCODE.NOERROR and not sick.rr
    assert (await ask(dns, "web.nothing.podium")).header.rcode == RCODE.NXDOMAIN
    assert (await ask(dns, "zz.addr.podium")).header.rcode == RCODE.NXDOMAIN


async def test_other_domains_are_refused_and_names_are_case_blind(dns: DnsServer) -> None:
    assert (await ask(dns, "example.com")).header.rcode == RCODE.REFUSED
    assert answers(await ask(dns, "WEB.Service.PODIUM")) == ["10.0.0.1", "10.0.0.2"]


async def test_tcp_answers_too(dns: DnsServer) -> None:
    reply = await ask(dns, "web.service.podium", "SRV", tcp=True)
    assert len(reply.rr) == 3


async def test_answers_follow_the_store_at_once(store: StateStore, dns: DnsServer) -> None:
    register(store, "a5", "10.0.0.5", 21005)
    assert "10.0.0.5" in answers(await ask(dns, "web.service.podium"))
    txn = store.txn()
    txn.delete_service(registration_id("a5", "web"))
    store.commit(txn)
    assert "10.0.0.5" not in answers(await ask(dns, "web.service.podium"))


async def test_a_big_answer_is_truncated_over_udp_and_whole_over_tcp(
    store: StateStore, dns: DnsServer
) -> None:
    for i in range(60):
        register(store, f"b{i:02d}", f"10.1.0.{i + 1}", 30000 + i, name="big")
    udp = await ask(dns, "big.service.podium", "SRV")
    assert udp.header.tc and 0 < len(udp.rr) < 60
    tcp = await ask(dns, "big.service.podium", "SRV", tcp=True)
    assert not tcp.header.tc and len(tcp.rr) == 60


def test_garbage_and_responses_are_ignored(store: StateStore) -> None:
    resolver = Resolver(store)
    assert resolver.handle(b"\x00\x01garbage") is None
    reply = DNSRecord.question("web.service.podium").reply()
    assert resolver.handle(reply.pack()) is None


async def test_a_taken_port_is_an_error(store: StateStore, dns: DnsServer) -> None:
    other = DnsServer(store, "127.0.0.1", dns.port)
    with pytest.raises(OSError):
        await other.start()


async def test_port_0_skips_a_free_udp_port_whose_tcp_twin_is_taken(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = asyncio.start_server
    tried: list[int] = []

    async def taken_once(*args: Any, **kwargs: Any) -> asyncio.Server:
        tried.append(args[2])
        if len(tried) == 1:  # another process holds this TCP port
            raise OSError(errno.EADDRINUSE, "address already in use")
        return await real(*args, **kwargs)

    monkeypatch.setattr(asyncio, "start_server", taken_once)
    server = DnsServer(store, "127.0.0.1", 0)
    await server.start()
    try:
        # the first port's TCP twin was taken: another was tried (on a busy machine another
        # process may take a second one too, so two or more), and the server is on the last
        assert len(tried) >= 2 and server.port == tried[-1] != tried[0]
        reply = await ask(server, "web.service.podium", tcp=True)
        assert reply.header.rcode == RCODE.NOERROR
        reply = await ask(server, "web.service.podium")
        assert reply.header.rcode == RCODE.NOERROR
    finally:
        await server.stop()
