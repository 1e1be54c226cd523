"""The check at DATA: sender domains and the domains a message links to, on domain lists.

A listed domain refuses the message (554 5.7.1) and suspends the account at once with the
evidence. Lookups fail open: a timeout or an error never blocks mail (it is logged).
"""

from __future__ import annotations

import asyncio
import email.utils
import re

import structlog

from relay import replies
from relay.abuse.service import SuspensionService
from relay.abuse.traffic import TrafficLog
from relay.address import domain_of
from relay.clock import Clock
from reputation import DnsblClient, Kind, Listing, extract_links, registrable_domain

__all__ = ["ContentGuard", "from_addresses", "sender_domains"]

log = structlog.get_logger("relay.abuse")

_FROM = re.compile(r"from[ \t]*:", re.IGNORECASE)
"""A From: field, also in the obsolete form with blanks before the colon (RFC 5322 4.5),
which receivers still read as the From: (a check that missed it could be dodged)."""


def from_addresses(body: bytes) -> list[str]:
    """The addresses of the From: header(s), folded lines joined."""
    head = body.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0][:64_000]
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    values: list[str] = []
    in_from = False
    for line in lines:
        if line[:1] in (" ", "\t") and in_from:
            values[-1] += " " + line.strip()
        else:
            in_from = _FROM.match(line) is not None
            if in_from:
                values.append(line.partition(":")[2].strip())
    return [addr for _, addr in email.utils.getaddresses(values) if "@" in addr]


def sender_domains(mail_from: str, body: bytes) -> list[str]:
    """Registrable domains of the envelope sender and of the From: header addresses."""
    addresses = ([mail_from] if mail_from else []) + from_addresses(body)
    found: dict[str, None] = {}
    for address in addresses:
        domain = registrable_domain(domain_of(address))
        if domain:
            found[domain] = None
    return list(found)


class ContentGuard:
    def __init__(
        self,
        *,
        dnsbl: DnsblClient,
        suspensions: SuspensionService,
        traffic: TrafficLog,
        clock: Clock,
        deadline: float,
    ) -> None:
        self._dnsbl = dnsbl
        self._suspensions = suspensions
        self._traffic = traffic
        self._clock = clock
        self._deadline = deadline

    async def check(self, account: str, mail_from: str, body: bytes) -> str | None:
        """None to accept; else the 554 refusal (the account is then suspended)."""
        if not any(z.kind == "domain" for z in self._dnsbl.zones):
            return None  # no domain list: nothing to check now, nothing for the monitor
        senders = sender_domains(mail_from, body)
        await self._traffic.record_senders(account, senders, self._clock.now())
        links = await asyncio.to_thread(extract_links, body)
        domains = list(dict.fromkeys([*senders, *links.domains]))
        try:
            async with asyncio.timeout(self._deadline):
                results = await asyncio.gather(*(self._dnsbl.check_domain(d) for d in domains))
        except TimeoutError:
            log.warning("dnsbl.data_check_timeout", account=account, domains=len(domains))
            return None
        for result in results:
            for zone, reason in result.failures:
                log.warning("dnsbl.lookup_failed", zone=zone, reason=reason, account=account)
        listed = [listing for r in results for listing in r.listings]
        if not listed:
            return None
        first = listed[0]
        where = "sender domain" if first.subject in senders else "link in the message"
        await self._suspensions.suspend(
            account,
            Kind.REPUTATION,
            f"{where} {first.subject} listed on {first.zone}",
            _evidence(listed, senders),
            actor="system:data-check",
        )
        return replies.CONTENT_LISTED.format(what=f"{where} {first.subject}", zone=first.zone)


def _evidence(listed: list[Listing], senders: list[str]) -> dict[str, object]:
    return {
        "listings": [x.as_evidence() for x in listed],
        "sender_domains": senders,
    }
