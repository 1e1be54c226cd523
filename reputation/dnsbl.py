"""DNS blocklist lookups (RFC 5782) for IPs and domains, async, cached, never failing closed.

An IP list is queried at the reversed octets (IPv4) or nibbles (IPv6) under its zone, a
domain list (SURBL, DBL style) at the domain under its zone. An A answer in 127.0.0.0/8 is a
listing; NXDOMAIN is not. Answers in 127.255.255.0/24 mean the list refuses our query (rate
limit, open resolver, unregistered user): an error, never a listing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from reputation.errors import ReputationError

__all__ = ["DnsblClient", "Listing", "LookupFailed", "LookupResult", "Zone", "query_name"]


class LookupFailed(ReputationError):
    """One zone gave no usable answer (timeout, SERVFAIL, refusal code, bogus answer)."""


@dataclass(frozen=True)
class Zone:
    name: str
    kind: Literal["ip", "domain"]
    meanings: Mapping[str, str] = field(default_factory=dict)
    """Return code → what it means (e.g. "127.0.0.2" → "SBL"); others are listings too."""


@dataclass(frozen=True)
class Listing:
    zone: str
    subject: str
    answers: tuple[str, ...]
    meaning: str
    reason: str
    """The list's TXT record, when it gives one."""
    checked_at: float

    def as_evidence(self) -> dict[str, object]:
        return {
            "zone": self.zone,
            "subject": self.subject,
            "answers": list(self.answers),
            "meaning": self.meaning,
            "reason": self.reason,
            "checked_at": self.checked_at,
        }


@dataclass(frozen=True)
class LookupResult:
    listings: tuple[Listing, ...] = ()
    failures: tuple[tuple[str, str], ...] = ()
    """(zone, reason) of the zones that did not answer usefully."""
    seconds: float = 0.0

    @property
    def listed(self) -> bool:
        return bool(self.listings)


def query_name(subject: str, zone: Zone) -> str:
    """The name to query: reversed IP or the domain, under the zone."""
    if zone.kind == "ip":
        address = ipaddress.ip_address(subject)
        if address.version == 4:
            labels = ".".join(reversed(str(address).split(".")))
        else:
            labels = ".".join(reversed(address.exploded.replace(":", "")))
        return f"{labels}.{zone.name}"
    return f"{subject.strip().lower().rstrip('.')}.{zone.name}"


class DnsblClient:
    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        zones: Iterable[Zone],
        *,
        clock: Callable[[], float] = time.time,
        cache_ttl: float = 300.0,
        timeout: float = 2.0,
        max_cache: int = 100_000,
        on_lookup: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._resolver = resolver
        self._on_lookup = on_lookup
        """Called with (zone, listed) after each query sent to a list (metrics)."""
        self.zones = tuple(zones)
        self._clock = clock
        self._cache_ttl = cache_ttl
        self._timeout = timeout
        self._max_cache = max_cache
        self._cache: dict[tuple[str, str], tuple[float, Listing | None]] = {}

    async def check_ip(self, ip: str, *, fresh: bool = False) -> LookupResult:
        """`fresh`: ask the lists even if the cache has an answer (the monitor does)."""
        return await self._check(ip, [z for z in self.zones if z.kind == "ip"], fresh)

    async def check_domain(self, domain: str, *, fresh: bool = False) -> LookupResult:
        return await self._check(domain, [z for z in self.zones if z.kind == "domain"], fresh)

    async def _check(self, subject: str, zones: list[Zone], fresh: bool) -> LookupResult:
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(self._lookup(subject, zone, fresh) for zone in zones), return_exceptions=True
        )
        listings, failures = [], []
        for zone, outcome in zip(zones, outcomes, strict=True):
            if isinstance(outcome, LookupFailed):
                failures.append((zone.name, str(outcome)))
            elif isinstance(outcome, BaseException):
                raise outcome
            elif outcome is not None:
                listings.append(outcome)
        return LookupResult(tuple(listings), tuple(failures), time.perf_counter() - started)

    async def _lookup(self, subject: str, zone: Zone, fresh: bool) -> Listing | None:
        key = (zone.name, subject)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now and not fresh:
            return cached[1]
        try:
            name = query_name(subject, zone)
        except ValueError:
            raise LookupFailed(f"not an IP address: {subject!r}") from None
        answers = await self._resolve(name, "A")
        if answers is None:
            listing = None
        else:
            listing = self._listing(subject, zone, answers, now)
            listing = replace(listing, reason=await self._txt(name))
        if self._on_lookup is not None:
            self._on_lookup(zone.name, listing is not None)
        if len(self._cache) >= self._max_cache:
            self._cache.clear()
        self._cache[key] = (now + self._cache_ttl, listing)
        return listing

    def _listing(self, subject: str, zone: Zone, answers: list[str], now: float) -> Listing:
        for answer in answers:
            address = ipaddress.ip_address(answer)
            if address in ipaddress.ip_network("127.255.255.0/24"):
                raise LookupFailed(f"{zone.name} refused the query (answer {answer})")
            if address not in ipaddress.ip_network("127.0.0.0/8"):
                raise LookupFailed(f"{zone.name} gave a bogus answer {answer}")
        meanings = [zone.meanings.get(a, f"listed ({a})") for a in answers]
        return Listing(
            zone=zone.name,
            subject=subject,
            answers=tuple(answers),
            meaning=", ".join(meanings),
            reason="",
            checked_at=now,
        )

    async def _resolve(self, name: str, rdtype: str) -> list[str] | None:
        try:
            answer = await self._resolver.resolve(name, rdtype, lifetime=self._timeout)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoAnswer:
            return None
        except dns.exception.Timeout:
            raise LookupFailed(f"{name}: timeout after {self._timeout}s") from None
        except (dns.resolver.NoNameservers, dns.exception.DNSException) as exc:
            raise LookupFailed(f"{name}: {type(exc).__name__}") from None
        return [rdata.to_text().strip('"') for rdata in answer]

    async def _txt(self, name: str) -> str:
        try:
            texts = await self._resolve(name, "TXT")
        except LookupFailed:
            return ""
        return " ".join(texts or [])[:500]
