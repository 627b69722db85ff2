"""A service's DNS name and catalog entries are within its namespace: ``web.service.podium``
is ``default``'s web, ``web.service.team-a.ns.podium`` team-a's."""

from __future__ import annotations

from dnslib import QTYPE, RCODE, DNSRecord

from podium.models import ServiceRegistration, registration_id
from podium.server import catalog
from podium.server.dns import Resolver
from podium.state import StateStore


def _store() -> StateStore:
    store = StateStore()
    txn = store.txn()
    for alloc, namespace, address in (("a1", "default", "10.0.0.1"), ("a2", "team-a", "10.0.0.2")):
        txn.put_service(
            ServiceRegistration(
                id=registration_id(alloc, "web"),
                service_name="web",
                namespace=namespace,
                job_id="web",
                group="g",
                alloc_id=alloc,
                node_id="n1",
                address=address,
                port=8080,
                tags=["v1"],
                healthy=True,
            )
        )
    store.commit(txn)
    return store


def ask(resolver: Resolver, name: str, qtype: str = "A") -> DNSRecord:
    return resolver.answer(DNSRecord.question(name, qtype))


def test_dns_names_per_namespace() -> None:
    resolver = Resolver(_store())
    got = ask(resolver, "web.service.podium")
    assert [str(rr.rdata) for rr in got.rr] == ["10.0.0.1"]
    got = ask(resolver, "web.service.team-a.ns.podium")
    assert [str(rr.rdata) for rr in got.rr] == ["10.0.0.2"]
    got = ask(resolver, "v1.web.service.team-a.ns.podium")
    assert [str(rr.rdata) for rr in got.rr] == ["10.0.0.2"]
    got = ask(resolver, "_web._tcp.service.team-a.ns.podium", "SRV")
    assert [rr.rdata.port for rr in got.rr if rr.rtype == QTYPE.SRV] == [8080]
    assert ask(resolver, "web.service.team-b.ns.podium").header.rcode == RCODE.NXDOMAIN


def test_catalog_listing_per_namespace() -> None:
    store = _store()
    assert [(s.namespace, s.name) for s in catalog.summaries(store, "team-a")] == [
        ("team-a", "web")
    ]
    assert len(catalog.summaries(store)) == 2
    assert [r.address for r in catalog.instances(store, "web", namespace="team-a")] == ["10.0.0.2"]
