"""DANE for SMTP (RFC 7672): an MX host's TLSA records, when DNSSEC proves them, say which
certificate (or key) the host must present; the name and the CA do not matter then.

The TLSA answer is validated here, by the relay itself, from a configured trust anchor
(`dns.trust_anchors`, e.g. the root zone's key): its RRSIG against the zone's DNSKEY set,
that set against a DS record of the parent (validated the same way) or an anchor. A TLSA
set without signatures (an unsigned zone) means no DANE; a signature that does not validate
is a bogus answer and the mail waits rather than going unauthenticated.

Only DANE-EE records (usage 3, RFC 7672 section 3.1.1) are used to authenticate: the
relay cannot see the peer's whole chain on this Python, so DANE-TA (usage 2) and the PKIX
usages (0, 1, unusable for SMTP) leave the session encrypted but unauthenticated.

Simplification, said plainly: a missing TLSA answer (NXDOMAIN/NODATA) is taken as "no
DANE" without validating the denial of existence (NSEC/NSEC3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import dns.asyncresolver
import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.resolver
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from relay.clock import Clock

__all__ = [
    "DaneBogus",
    "DaneValidator",
    "TlsaRecord",
    "certificate_matches",
    "parse_anchors",
    "tlsa_of_hops",
]

_MAX_DEPTH = 12


class DaneBogus(Exception):
    """A DNSSEC signature on the way to the TLSA records does not validate."""


@dataclass(frozen=True)
class TlsaRecord:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        """DANE-EE with a selector and matching type this relay knows."""
        return self.usage == 3 and self.selector in (0, 1) and self.mtype in (0, 1, 2)


def certificate_matches(der: bytes, records: tuple[TlsaRecord, ...]) -> bool:
    """Does the peer's certificate match one usable record (RFC 6698 section 2.1)?"""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    for record in records:
        if not record.usable:
            continue
        selected = der if record.selector == 0 else spki
        if record.mtype == 1:
            selected = hashlib.sha256(selected).digest()
        elif record.mtype == 2:
            selected = hashlib.sha512(selected).digest()
        if selected == record.data:
            return True
    return False


def parse_anchors(texts: list[str]) -> dict[dns.name.Name, dns.rdataset.Rdataset]:
    """Trust anchors as zone-file lines (`. DS 20326 8 2 E06D…` or `zone. DNSKEY 257 3 …`)."""
    anchors: dict[dns.name.Name, dns.rdataset.Rdataset] = {}
    for text in texts:
        parts = text.split()
        name = dns.name.from_text(parts[0])
        rest = parts[1:]
        if rest and rest[0].upper() == "IN":
            rest = rest[1:]
        rdata = dns.rdata.from_text(dns.rdataclass.IN, rest[0], " ".join(rest[1:]))
        rdataset = anchors.setdefault(name, dns.rdataset.Rdataset(dns.rdataclass.IN, rdata.rdtype))
        if rdataset.rdtype != rdata.rdtype:
            raise ValueError(f"{parts[0]}: give either DS or DNSKEY anchors, not both")
        rdataset.add(rdata)
    return anchors


class DaneValidator:
    """TLSA records of MX hosts, validated from the trust anchors."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        clock: Clock,
        anchors: dict[dns.name.Name, dns.rdataset.Rdataset],
    ) -> None:
        """`resolver`: asks with the DO bit (it is set here) so answers carry RRSIGs."""
        resolver.use_edns(0, dns.flags.DO, 1232)
        self._resolver = resolver
        self._clock = clock
        self._anchors = anchors

    async def tlsa(self, host: str, port: int) -> tuple[TlsaRecord, ...] | None:
        """The host's TLSA records when DNSSEC proves them; None: no DANE for this host.
        Raises DaneBogus when a signature does not validate."""
        qname = dns.name.from_text(f"_{port}._tcp.{host.rstrip('.')}.")
        rrset = await self._secure(qname, dns.rdatatype.TLSA, 0)
        if rrset is None:
            return None
        return tuple(
            TlsaRecord(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert)) for r in rrset
        )

    async def _secure(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, depth: int
    ) -> dns.rrset.RRset | None:
        """The validated rrset; None when it does not exist or is not signed (insecure)."""
        if depth > _MAX_DEPTH:
            raise DaneBogus(f"{qname}: chain of trust too long")
        try:
            answer = await self._resolver.resolve(qname, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException:
            raise
        rrset = answer.rrset
        if rrset is None:
            return None
        try:
            sigs = answer.response.find_rrset(
                answer.response.answer, rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype
            )
        except KeyError:
            return None  # an unsigned zone: insecure, not bogus
        signer = sigs[0].signer
        keys = await self._keys(signer, depth + 1)
        if keys is None:
            return None  # an insecure delegation above the signer
        try:
            dns.dnssec.validate(rrset, sigs, {signer: keys}, now=self._clock.now())
        except dns.exception.ValidationFailure as exc:
            raise DaneBogus(f"{qname} {dns.rdatatype.to_text(rdtype)}: {exc}") from None
        return rrset

    async def _keys(self, zone: dns.name.Name, depth: int) -> dns.rdataset.Rdataset | None:
        """The zone's DNSKEY set, validated from an anchor or the parent's DS; None when
        the zone is not signed from a trust anchor (insecure)."""
        if depth > _MAX_DEPTH:
            raise DaneBogus(f"{zone}: chain of trust too long")
        anchor = self._anchors.get(zone)
        if anchor is not None and anchor.rdtype == dns.rdatatype.DNSKEY:
            trusted = anchor
        else:
            ds = anchor
            if ds is None:
                if zone == dns.name.root:
                    return None
                found = await self._secure(zone, dns.rdatatype.DS, depth + 1)
                if found is None:
                    return None
                ds = found.to_rdataset()
            trusted = None
        try:
            answer = await self._resolver.resolve(zone, dns.rdatatype.DNSKEY, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            raise DaneBogus(f"{zone}: signed but no DNSKEY") from None
        keys = answer.rrset
        if keys is None:
            raise DaneBogus(f"{zone}: signed but no DNSKEY")
        if trusted is None:
            assert ds is not None
            trusted = _keys_matching(zone, keys, ds)
            if not trusted:
                raise DaneBogus(f"{zone}: no DNSKEY matches its DS")
        try:
            sigs = answer.response.find_rrset(
                answer.response.answer,
                zone,
                dns.rdataclass.IN,
                dns.rdatatype.RRSIG,
                dns.rdatatype.DNSKEY,
            )
            dns.dnssec.validate(keys, sigs, {zone: trusted}, now=self._clock.now())
        except KeyError:
            raise DaneBogus(f"{zone}: DNSKEY set not signed") from None
        except dns.exception.ValidationFailure as exc:
            raise DaneBogus(f"{zone} DNSKEY: {exc}") from None
        return keys.to_rdataset()


def _keys_matching(
    zone: dns.name.Name, keys: dns.rrset.RRset, ds_set: dns.rdataset.Rdataset
) -> dns.rdataset.Rdataset:
    matching = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    for key in keys:
        for ds in ds_set:
            try:
                if dns.dnssec.make_ds(zone, key, ds.digest_type) == ds:
                    matching.add(key)
            except dns.exception.UnsupportedAlgorithm:
                continue
    return matching


async def tlsa_of_hops(
    validator: DaneValidator, hosts: list[tuple[str, int]]
) -> tuple[tuple[str, tuple[TlsaRecord, ...]], ...]:
    """(host, records) of the MX hosts DNSSEC gives TLSA records for. Raises DaneBogus, and
    DNSException when a lookup fails (not found is fine): the mail then waits."""
    found = []
    for host, port in dict.fromkeys(hosts):
        records = await validator.tlsa(host, port)
        if records is not None:
            found.append((host, records))
    return tuple(found)
