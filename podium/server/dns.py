"""A DNS interface to the service catalog, served from the server's in-memory store.

Names (``podium`` is the default domain)::

    <service>.service.podium          A/AAAA: healthy instances' addresses; SRV: their ports
    <tag>.<service>.service.podium    the same, only instances with that tag
    _<service>._<tag>.service.podium  RFC 2782 form (``_tcp``/``_udp`` mean any tag)
    <hex address>.addr.podium         A/AAAA: the address itself (the target of SRV answers)

Those name the ``default`` namespace's services.  Another namespace's are named with
``.<namespace>.ns`` after ``service`` (Consul's form): ``web.service.team-a.ns.podium``,
``tag.web.service.team-a.ns.podium``, ``_web._tcp.service.team-a.ns.podium``.

Only healthy instances are answered.  An unknown service (or tag) is NXDOMAIN; a
known one with no healthy instance is an empty NOERROR answer.  TTLs are 0 by
default: the catalog changes as instances start, stop and fail their checks, and
a cached answer would send clients to an instance that already left.

SRV targets are ``<hex>.addr.<domain>`` names (Consul's form), which resolve
without a lookup, and each comes with its A/AAAA record in the additional
section.  UDP answers larger than the client allows (512 bytes, or its EDNS0
size) are cut and flagged TC, so the client retries over TCP, which is served
on the same port.

Lookups read the store directly, on the server's event loop: no HTTP, no copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import socket
import struct
from typing import Any, cast

from dnslib import AAAA, QTYPE, RCODE, RR, SOA, SRV, A, DNSError, DNSLabel, DNSRecord

from podium.models import ServiceRegistration
from podium.state import Snapshot

log = logging.getLogger("podium.dns")

DEFAULT_DNS_ADDR = "127.0.0.1:7653"
"""Beside the HTTP API's 7634 ("53" for DNS); not Consul's 8600, which a machine running
Consul holds, and which would turn Podium's DNS off there."""
PORT_0_TRIES = 20
"""Free UDP ports tried (port 0) before giving up on finding the same TCP port free."""
UDP_LIMIT = 512
MAX_UDP = 4096
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _hex(addr: Address) -> str:
    return addr.packed.hex()


def _unhex(label: str) -> Address | None:
    try:
        raw = bytes.fromhex(label)
    except ValueError:
        return None
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    if len(raw) == 16:
        return ipaddress.IPv6Address(raw)
    return None


def _ip(value: str) -> Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


class Resolver:
    """Answers one DNS message from the catalog; pure apart from reading ``store``."""

    def __init__(self, store: Snapshot, domain: str = "podium", ttl: int = 0) -> None:
        self.store = store
        self.domain = DNSLabel(domain.strip("."))
        self.ttl = ttl

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply(ra=0, aa=1)
        if request.header.opcode != 0 or len(request.questions) != 1:
            reply.header.rcode = RCODE.NOTIMP if request.header.opcode else RCODE.FORMERR
            return reply
        q = request.q
        qname = DNSLabel([label.lower() for label in q.qname.label])
        if not qname.matchSuffix(self.domain):
            reply.header.rcode = RCODE.REFUSED  # not ours, and we do not recurse
            return reply
        labels = [
            bytes(label).decode("ascii", "replace")
            for label in qname.stripSuffix(self.domain).label
        ]
        namespace = "default"
        if len(labels) >= 4 and labels[-1] == "ns" and labels[-3] == "service":
            namespace, labels = labels[-2], labels[:-2]
        if len(labels) >= 2 and labels[-1] == "service":
            self._service(reply, q.qname, q.qtype, labels[:-1], namespace)
        elif len(labels) == 2 and labels[1] == "addr":
            self._addr(reply, q.qname, q.qtype, labels[0])
        elif not labels:
            if q.qtype in (QTYPE.SOA, QTYPE.ANY):
                reply.add_answer(self._soa())
        else:
            self._nxdomain(reply)
        return reply

    # -- names
    def _service(
        self,
        reply: DNSRecord,
        qname: DNSLabel,
        qtype: int,
        parts: list[str],
        namespace: str = "default",
    ) -> None:
        tag: str | None = None
        if len(parts) == 2 and parts[0].startswith("_") and parts[1].startswith("_"):
            name, tag = parts[0][1:], parts[1][1:]
            if tag in ("tcp", "udp"):
                tag = None
        elif len(parts) == 2:
            tag, name = parts
        elif len(parts) == 1:
            name = parts[0]
        else:
            self._nxdomain(reply)
            return
        regs = self.store.services_by_name(name, namespace)
        if tag is not None:
            regs = [r for r in regs if tag in (t.lower() for t in r.tags)]
        if not regs:
            self._nxdomain(reply)
            return
        healthy = [r for r in regs if r.healthy]
        random.shuffle(healthy)  # spread clients over the instances
        if qtype == QTYPE.SRV:
            self._srv(reply, qname, healthy)
        elif qtype in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY):
            seen: set[Address] = set()
            for reg in healthy:
                addr = _ip(reg.address)
                if addr is not None and addr not in seen and self._wanted(qtype, addr):
                    seen.add(addr)
                    reply.add_answer(self._address_rr(qname, addr))
        if not reply.rr:
            reply.add_auth(self._soa())

    def _srv(self, reply: DNSRecord, qname: DNSLabel, regs: list[ServiceRegistration]) -> None:
        extra: dict[str, RR] = {}
        for reg in regs:
            addr = _ip(reg.address)
            if addr is not None:
                target = self.domain.add(f"{_hex(addr)}.addr")
                extra.setdefault(str(target), self._address_rr(target, addr))
            else:  # a host name advertised instead of an address
                target = DNSLabel(reg.address)
            rdata = SRV(priority=1, weight=1, port=reg.port, target=target)
            reply.add_answer(RR(qname, QTYPE.SRV, rdata=rdata, ttl=self.ttl))
        for rr in extra.values():
            reply.add_ar(rr)

    def _addr(self, reply: DNSRecord, qname: DNSLabel, qtype: int, label: str) -> None:
        addr = _unhex(label)
        if addr is None:
            self._nxdomain(reply)
            return
        if self._wanted(qtype, addr):
            reply.add_answer(self._address_rr(qname, addr))
        else:
            reply.add_auth(self._soa())

    # -- records
    @staticmethod
    def _wanted(qtype: int, addr: Address) -> bool:
        if qtype == QTYPE.ANY:
            return True
        want: int = QTYPE.A if addr.version == 4 else QTYPE.AAAA
        return qtype == want

    def _address_rr(self, name: DNSLabel, addr: Address) -> RR:
        if addr.version == 4:
            return RR(name, QTYPE.A, rdata=A(str(addr)), ttl=self.ttl)
        return RR(name, QTYPE.AAAA, rdata=AAAA(str(addr)), ttl=self.ttl)

    def _soa(self) -> RR:
        serial = self.store.index & 0xFFFFFFFF
        rdata = SOA(
            mname=self.domain.add("ns"),
            rname=self.domain.add("hostmaster"),
            times=(serial, 3600, 600, 86400, self.ttl),
        )
        return RR(self.domain, QTYPE.SOA, rdata=rdata, ttl=self.ttl)

    def _nxdomain(self, reply: DNSRecord) -> None:
        reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(self._soa())

    # -- wire
    def handle(self, data: bytes, limit: int | None = None) -> bytes | None:
        """Answer a packet; ``limit`` is the UDP size cap (None over TCP).  None: ignore it."""
        try:
            request = DNSRecord.parse(data)
        except (DNSError, struct.error, ValueError, IndexError):
            return None
        if request.header.qr:
            return None  # a response, not a question
        try:
            reply = self.answer(request)
        except Exception:
            log.exception("DNS lookup failed")
            reply = request.reply(ra=0, aa=0)
            reply.header.rcode = RCODE.SERVFAIL
        packed: bytes = reply.pack()
        if limit is None:
            return packed
        for opt in request.ar:
            if opt.rtype == QTYPE.OPT:
                limit = max(limit, min(int(opt.rclass), MAX_UDP))
        if len(packed) <= limit:
            return packed
        return _truncate(reply, limit)


def _truncate(reply: DNSRecord, limit: int) -> bytes:
    """Drop the additional records, then answers, until the message fits; flag it TC."""
    reply.header.tc = 1
    reply.ar = []
    packed: bytes = reply.pack()
    while len(packed) > limit and reply.rr:
        reply.rr.pop()
        packed = reply.pack()
    return packed


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        answer = self.resolver.handle(data, UDP_LIMIT)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)


class DnsServer:
    """The catalog's DNS server: UDP and TCP on one address (port 0: a free one)."""

    def __init__(
        self,
        store: Snapshot,
        host: str = "127.0.0.1",
        port: int = 7653,
        *,
        domain: str = "podium",
        ttl: int = 0,
    ) -> None:
        self.resolver = Resolver(store, domain, ttl)
        self.host = host
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind both sockets; raises OSError (with its errno) when the address is taken.

        The UDP socket is bound here rather than by the event loop: uvloop
        reports a taken address as an OSError without errno or reason.  With
        port 0 the UDP port is free but the same TCP port may not be (another
        socket's ephemeral port): a few other ports are tried then.
        """
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        tries = PORT_0_TRIES if self.port == 0 else 1
        for attempt in range(tries):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, self.port))
                port = int(sock.getsockname()[1])
                tcp = await asyncio.start_server(
                    self._serve_tcp, self.host, port, family=family, reuse_address=True
                )
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE and attempt + 1 < tries:
                    continue
                raise
            break
        try:
            udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.resolver), sock=sock)
        except BaseException:
            sock.close()
            tcp.close()
            raise
        self._tcp = tcp
        self._udp = udp
        self.port = port
        domain = str(self.resolver.domain).rstrip(".")
        log.info("DNS: serving *.service.%s on %s:%d", domain, self.host, self.port)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            while True:
                async with asyncio.timeout(10):
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    data = await reader.readexactly(size)
                answer = self.resolver.handle(data)
                if answer is None:
                    break
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._conns.discard(task)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._conns):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
            self._tcp = None


def port_holder(host: str, port: int) -> str | None:
    """Who listens on ``host:port`` (UDP or TCP): ``"consul (pid 812)"``, else None.

    Read from the kernel's socket tables through psutil; a process of another
    user may be seen without its pid (then ``"a process of another user"``),
    and where even the tables cannot be read, None.
    """
    import psutil

    wild = ("0.0.0.0", "::", "")
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    other_user = False
    for conn in conns:
        laddr = conn.laddr
        if not laddr or laddr.port != port:
            continue
        if laddr.ip not in (host, *wild) and host not in wild:
            continue
        if conn.type == socket.SOCK_STREAM and conn.status != psutil.CONN_LISTEN:
            continue
        if conn.pid is None:
            other_user = True
            continue
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.Error:
            name = "a process"
        return f"{name} (pid {conn.pid})"
    return "a process of another user" if other_user else None


def bind_failure(addr: str, exc: OSError) -> str:
    """Why DNS cannot listen on ``addr``, naming who holds it when that can be found."""
    if exc.errno == errno.EADDRINUSE:
        host, _, port = addr.rpartition(":")
        holder = port_holder(host.strip("[]"), int(port)) if port.isdigit() else None
        return f"{addr} is taken by {holder or 'another process'}"
    return f"cannot listen on {addr}: {exc.strerror or exc}"
