"""The "simplified SPF" of the contract: do customers' sender domains authorize our egress IPs?

`spf_record()` is what the provider publishes and customers include. The check runs pyspf
(blocking: in a thread), pointed at the configured resolvers through its lookup hook, and
fails open: a DNS problem is logged, never a refusal.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.resolver
import spf

from relay.address import domain_of

__all__ = ["SpfChecker", "SpfVerdict", "install_resolver", "spf_record"]


def spf_record(egress_ips: Sequence[str], include_name: str) -> tuple[str, str]:
    """(name, TXT value) for the provider to publish; customers add `include:<name>`."""
    terms = []
    for ip in egress_ips:
        version = ipaddress.ip_address(ip).version
        terms.append(f"ip{version}:{ip}")
    return include_name, " ".join(["v=spf1", *terms, "-all"])


def install_resolver(resolver: dns.resolver.Resolver) -> None:
    """Route pyspf's DNS through `resolver` (its module-level hook; one per process)."""

    def lookup(name: str, qtype: str, tcpfallback: bool = True, timeout: float = 30) -> list[Any]:
        out: list[Any] = []
        try:
            answers = resolver.resolve(name, qtype, lifetime=timeout)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return out
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise spf.TempError(f"DNS {exc}") from None
        for rdata in answers:
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                out.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), rdata.strings))
        return out

    spf.DNSLookup = lookup


@dataclass(frozen=True)
class SpfVerdict:
    result: str
    """pass, fail, softfail, neutral, none, permerror, temperror (RFC 7208)."""
    ip: str
    """The egress IP the result is about (the first that did not pass)."""
    explanation: str

    @property
    def authorized(self) -> bool:
        return self.result == "pass"


class SpfChecker:
    def __init__(
        self,
        egress_ips: Sequence[str],
        *,
        helo: str,
        timeout: float,
        clock: Callable[[], float] = time.time,
        cache_ttl: float = 300.0,
    ) -> None:
        self._ips = tuple(dict.fromkeys(egress_ips))
        self._helo = helo
        self._timeout = timeout
        self._clock = clock
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, SpfVerdict]] = {}

    async def check(self, sender: str) -> SpfVerdict | None:
        """None when there is nothing to check (null sender, no egress IPs, or timeout)."""
        domain = domain_of(sender)
        if not domain or not self._ips:
            return None
        now = self._clock()
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            async with asyncio.timeout(self._timeout):
                verdict = await asyncio.to_thread(self._check_all, sender)
        except TimeoutError:
            return None
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[domain] = (now + self._ttl, verdict)
        return verdict

    def _check_all(self, sender: str) -> SpfVerdict:
        for ip in self._ips:
            result, explanation = spf.check2(
                i=ip, s=sender, h=self._helo, timeout=self._timeout, querytime=self._timeout
            )
            if result != "pass":
                return SpfVerdict(result, ip, explanation)
        return SpfVerdict("pass", self._ips[0], "")
