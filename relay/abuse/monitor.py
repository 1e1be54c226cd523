"""The blocklist monitor inside `relay run`: egress IPs on IP lists, sender domains on domain
lists, every `reputation.monitor_interval`.

A listed egress IP leaves the rotation at once (the delivery engine skips listed IPs), the
operators get an alert, and the accounts that sent through it in the window before are
suspended (all of them, or those over a share, by config) with the evidence. Delisted: back in
rotation; the suspensions stay until an operator reviews them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from relay.abuse.notify import Notifier
from relay.abuse.service import SuspensionService
from relay.abuse.traffic import TrafficLog
from relay.clock import Clock
from relay.config import Egress
from relay.delivery.egress_state import EgressState
from relay.errors import RelayError
from reputation import DnsblClient, Kind, Listing, attribute

__all__ = ["MonitorSettings", "ReputationMonitor"]

log = structlog.get_logger("relay.monitor")


@dataclass(frozen=True)
class MonitorSettings:
    interval: float
    window: float
    """How far back sending counts when a listing is attributed."""
    attribution: str
    min_share: float


class ReputationMonitor:
    def __init__(
        self,
        *,
        dnsbl: DnsblClient,
        egress: Sequence[Egress],
        egress_state: EgressState,
        traffic: TrafficLog,
        suspensions: SuspensionService,
        notifier: Notifier,
        clock: Clock,
        settings: MonitorSettings,
    ) -> None:
        self._dnsbl = dnsbl
        self._egress = tuple(egress)
        self._state = egress_state
        self._traffic = traffic
        self._suspensions = suspensions
        self._notifier = notifier
        self._clock = clock
        self._settings = settings

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except RelayError as exc:  # Redis away: try again next round
                log.error("monitor.failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.interval)

    async def run_once(self) -> None:
        await self.check_egress()
        await self.check_sender_domains()

    async def check_egress(self) -> None:
        listed_now = {r.ip for r in await self._state.describe(self._egress) if r.listed}
        for egress in self._egress:
            result = await self._dnsbl.check_ip(egress.ip, fresh=True)
            for zone, reason in result.failures:
                log.warning("dnsbl.lookup_failed", ip=egress.ip, zone=zone, reason=reason)
            if result.listings and egress.ip not in listed_now:
                await self._listed(egress.ip, list(result.listings))
            elif not result.listings and not result.failures and egress.ip in listed_now:
                await self._state.clear_listed(egress.ip)
                log.warning("egress.delisted", ip=egress.ip)
                await self._notifier.alert(
                    f"egress IP {egress.ip} delisted: back in rotation",
                    [
                        "Suspensions it caused stay open until reviewed:"
                        " relay suspension list --open"
                    ],
                    self._clock.now(),
                )

    async def _listed(self, ip: str, listings: list[Listing]) -> None:
        now = self._clock.now()
        evidence = [x.as_evidence() for x in listings]
        await self._state.set_listed(ip, json.dumps(evidence))
        log.warning("egress.listed", ip=ip, zones=[x.zone for x in listings])
        traffic = await self._traffic.by_account(ip, now, self._settings.window)
        blamed = attribute(
            traffic,
            policy="share" if self._settings.attribution == "share" else "all",
            min_share=self._settings.min_share,
        )
        zones = ", ".join(x.zone for x in listings)
        await self._suspensions.audit.append(
            actor="system:monitor",
            action="ip-listed",
            subject=ip,
            reason=f"listed on {zones}",
            evidence={"listings": evidence, "traffic": traffic},
        )
        await self._notifier.alert(
            f"egress IP {ip} listed on {zones}: out of rotation",
            [f"{x.zone}: {x.meaning} {x.reason}" for x in listings]
            + [f"Accounts suspended: {', '.join(a.account for a in blamed) or 'none'}"],
            now,
        )
        for blame in blamed:
            await self._suspensions.suspend(
                blame.account,
                Kind.REPUTATION,
                f"egress IP {ip} listed on {zones}",
                {
                    "ip": ip,
                    "listings": evidence,
                    "messages": blame.messages,
                    "share": round(blame.share, 4),
                    "window_seconds": self._settings.window,
                },
                actor="system:monitor",
            )

    async def check_sender_domains(self) -> None:
        if not any(z.kind == "domain" for z in self._dnsbl.zones):
            return
        now = self._clock.now()
        since = now - self._settings.window
        for domain in await self._traffic.sender_domains(since):
            result = await self._dnsbl.check_domain(domain, fresh=True)
            if not result.listings:
                continue
            evidence = [x.as_evidence() for x in result.listings]
            zones = ", ".join(x.zone for x in result.listings)
            for account in await self._traffic.accounts_using(domain, since):
                await self._suspensions.suspend(
                    account,
                    Kind.REPUTATION,
                    f"sender domain {domain} listed on {zones}",
                    {"domain": domain, "listings": evidence},
                    actor="system:monitor",
                )
