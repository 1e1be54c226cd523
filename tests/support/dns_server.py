"""An in-process authoritative DNS server for tests: UDP and TCP on one free 127.0.0.1 port.

Records come from zone-file text and can be replaced while it runs; a name can be made to
answer SERVFAIL or not to answer at all. NXDOMAIN (no such name) and NODATA (the name
exists, not with that type) are told apart, as a resolver's caller relies on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from types import TracebackType
from typing import cast

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ed25519
from dns.rdtypes.ANY.DNSKEY import DNSKEY

from quota import Duration
from relay.config import DnsSettings, HostPort

__all__ = ["DnsServer"]

Key = tuple[dns.name.Name, dns.rdatatype.RdataType]


class DnsServer:
    def __init__(self, zone: str = "", *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.queries: list[tuple[str, str]] = []
        """(name, type) of every query received, e.g. ("example.com.", "MX")."""
        self._records: dict[Key, dns.rrset.RRset] = {}
        self._servfail: set[dns.name.Name] = set()
        self._silent: set[dns.name.Name] = set()
        self._sigs: dict[Key, dns.rrset.RRset] = {}
        """RRSIG sets by (owner, type covered), sent to queries with the DO bit."""
        self._keys: dict[dns.name.Name, tuple[ed25519.Ed25519PrivateKey, DNSKEY]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        if zone:
            self.load(zone)

    def load(self, text: str) -> None:
        """Add the records of zone-file text (absolute names, or relative to the root)."""
        zone = dns.zone.from_text(
            "$TTL 60\n" + text, origin=dns.name.root, relativize=False, check_origin=False
        )
        for name, rdataset in zone.iterate_rdatasets():
            rrset = dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))
            self._records[(name, rdataset.rdtype)] = rrset

    def set(self, name: str, rdtype: str, *values: str, ttl: int = 60) -> None:
        """Replace the records of one name and type; no values removes them."""
        key = (dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
        self._records.pop(key, None)
        if values:
            self._records[key] = dns.rrset.from_text_list(key[0], ttl, "IN", rdtype, list(values))

    def sign(self, zone: str) -> str:
        """Sign every record under `zone` (DNSSEC, Ed25519) as it is now, and add its DNSKEY
        set; returns the key as a trust anchor line. Sign a child zone before its parent
        (whose records under the child, but its DS, the parent does not sign)."""
        apex = dns.name.from_text(zone)
        if apex not in self._keys:
            private = ed25519.Ed25519PrivateKey.generate()
            key = dns.dnssec.make_dnskey(private.public_key(), "ED25519", flags=257)
            self._keys[apex] = (private, key)
        private, key = self._keys[apex]
        self._records[(apex, dns.rdatatype.DNSKEY)] = dns.rrset.from_rdata(apex, 60, key)
        children = [z for z in self._keys if z != apex and z.is_subdomain(apex)]
        for (name, rdtype), rrset in self._records.items():
            if not name.is_subdomain(apex):
                continue
            child = next((z for z in children if name.is_subdomain(z)), None)
            if child is not None and not (name == child and rdtype == dns.rdatatype.DS):
                continue  # the child zone signs its own
            sig = dns.dnssec.sign(rrset, private, apex, key, lifetime=86400 * 365 * 30)
            self._sigs[(name, rdtype)] = dns.rrset.from_rdata(name, rrset.ttl, sig)
        return f"{apex} DNSKEY {key.to_text()}"

    def ds(self, zone: str) -> str:
        """The DS record (SHA-256) of a signed zone's key, for its parent."""
        apex = dns.name.from_text(zone)
        return dns.dnssec.make_ds(apex, self._keys[apex][1], "SHA256").to_text()

    def servfail(self, name: str, on: bool = True) -> None:
        _toggle(self._servfail, dns.name.from_text(name), on)

    def silence(self, name: str, on: bool = True) -> None:
        """Queries for `name` get no answer at all (the resolver times out)."""
        _toggle(self._silent, dns.name.from_text(name), on)

    def settings(self, timeout: float = 2.0) -> DnsSettings:
        return DnsSettings(
            servers=[HostPort(host=self.host, port=self.port)], timeout=Duration(timeout)
        )

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        self.queries.append((qname.to_text(), dns.rdatatype.to_text(qtype)))
        if qname in self._silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if qname in self._servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        name = qname
        for _ in range(8):  # follow a CNAME chain within our records
            if rrset := self._records.get((name, qtype)):
                response.answer.append(rrset)
            elif (cname := self._records.get((name, dns.rdatatype.CNAME))) is not None:
                response.answer.append(cname)
                name = cname[0].target
                continue
            elif not any(owner.is_subdomain(name) for owner, _ in self._records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            break
        if query.ednsflags & dns.flags.DO:
            for rrset in list(response.answer):
                if (sig := self._sigs.get((rrset.name, rrset.rdtype))) is not None:
                    response.answer.append(sig)
        negative = not response.answer or response.answer[-1].rdtype == dns.rdatatype.CNAME
        if negative and (soa := self._soa_above(name)) is not None:  # RFC 2308 caching
            response.authority.append(soa)
        return response

    def _soa_above(self, name: dns.name.Name) -> dns.rrset.RRset | None:
        while True:
            if (soa := self._records.get((name, dns.rdatatype.SOA))) is not None:
                return soa
            try:
                name = name.parent()
            except dns.name.NoParent:
                return None

    async def __aenter__(self) -> DnsServer:
        loop = asyncio.get_running_loop()
        for _ in range(20):  # the UDP port picked by the system may be taken for TCP
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, 0)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:
                udp.close()
                continue
            self._udp, self.port = udp, port
            return self
        raise OSError("no port free for both UDP and TCP")

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                query = dns.message.from_wire(await reader.readexactly(length))
                response = self.answer(query)
                if response is not None:
                    wire = response.to_wire()
                    writer.write(struct.pack("!H", len(wire)) + wire)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, dns.exception.DNSException):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        response = self.server.answer(query)
        if response is None or self.transport is None:
            return
        try:
            wire = response.to_wire(max_size=query.payload if query.edns >= 0 else 512)
        except dns.exception.TooBig:  # tell the client to retry over TCP
            response.answer.clear()
            response.flags |= dns.flags.TC
            wire = response.to_wire()
        self.transport.sendto(wire, addr)


def _toggle(names: set[dns.name.Name], name: dns.name.Name, on: bool) -> None:
    if on:
        names.add(name)
    else:
        names.discard(name)
