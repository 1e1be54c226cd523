"""The blocklist monitor against a real DNS server serving a list zone."""

from __future__ import annotations

import json

import pytest

from quota import QuotaStore, Verdict
from relay.abuse.factory import dnsbl_client, suspension_service
from relay.abuse.monitor import MonitorSettings, ReputationMonitor
from relay.abuse.traffic import TrafficLog
from relay.config import Settings
from relay.delivery.egress_state import egress_state
from tests.conftest import add_sender
from tests.support.dns_server import DnsServer
from tests.support.spool import temp_spool


@pytest.fixture
async def dns():
    async with DnsServer() as server:
        yield server


def settings_for(dns, **reputation) -> Settings:
    return Settings(
        hostname="relay.test",
        spool={"dir": temp_spool().root},
        delivery={"egress": [{"ip": "127.0.0.2", "helo": "a"}, {"ip": "127.0.0.3", "helo": "b"}]},
        dns={"servers": [f"127.0.0.1:{dns.port}"]},
        reputation={
            "zones": [
                {"zone": "bl.test", "kind": "ip", "meanings": {"127.0.0.2": "spam source"}},
                {"zone": "dbl.test", "kind": "domain"},
            ],
            "operators": ["noc@provider.example"],
            **reputation,
        },
    )


def monitor_for(redis, clock, settings):
    quota = QuotaStore(redis, default_per_minute=100, per_recipient=100)
    suspensions = suspension_service(redis, settings, clock, quota)
    rep = settings.reputation
    state = egress_state(redis, clock, settings.delivery)
    monitor = ReputationMonitor(
        dnsbl=dnsbl_client(settings, clock),
        egress=settings.delivery.egress,
        egress_state=state,
        traffic=TrafficLog(redis),
        suspensions=suspensions,
        notifier=suspensions.notifier,
        clock=clock,
        settings=MonitorSettings(
            interval=rep.monitor_interval.seconds,
            window=rep.attribution_window.seconds,
            attribution=rep.attribution,
            min_share=rep.attribution_share,
        ),
    )
    return monitor, suspensions, state, quota


@pytest.mark.parametrize("policy,blamed", [("all", ["big", "small"]), ("share", ["big"])])
async def test_listed_egress_ip_leaves_rotation_and_its_senders_are_suspended(
    redis, clock, dns, policy, blamed
):
    for login in ("big", "small", "elsewhere"):
        await add_sender(redis, login)
    settings = settings_for(dns, attribution=policy, attribution_share=0.5, cache_ttl="1s")
    monitor, suspensions, state, quota = monitor_for(redis, clock, settings)
    traffic = TrafficLog(redis)
    await traffic.record_delivery("127.0.0.2", "big", clock.now() - 7200, messages=90)
    await traffic.record_delivery("127.0.0.2", "small", clock.now() - 60, messages=10)
    await traffic.record_delivery("127.0.0.3", "elsewhere", clock.now(), messages=50)
    await traffic.record_delivery("127.0.0.2", "old", clock.now() - 3 * 86400, messages=500)

    await monitor.run_once()
    assert [r.state for r in await state.describe(settings.delivery.egress)] == [
        "healthy",
        "healthy",
    ]

    dns.set("2.0.0.127.bl.test", "A", "127.0.0.2")
    await monitor.run_once()
    reports = {r.ip: r for r in await state.describe(settings.delivery.egress)}
    assert reports["127.0.0.2"].state == "listed" and reports["127.0.0.3"].state == "healthy"
    assert json.loads(reports["127.0.0.2"].listed[0])[0]["meaning"] == "spam source"
    open_ones = await suspensions.store.listing(open_only=True)
    assert sorted(s.account for s in open_ones) == sorted(blamed)
    big = next(s for s in open_ones if s.account == "big")
    assert big.evidence["messages"] == 90 and big.evidence["share"] == 0.9
    assert big.evidence["listings"][0]["zone"] == "bl.test"
    for login in blamed:
        d = await quota.reserve(login, "t", "x@example.com", clock.now())
        assert d.verdict is Verdict.SUSPENDED
    alerts = [
        m
        for m in await suspensions.notifier._queue.list_messages()
        if m.recipients == ("noc@provider.example",)
    ]
    assert len(alerts) == 1 + len(blamed)  # the listing, then one per suspension

    await monitor.run_once()  # still listed: nothing new
    assert len(await suspensions.store.listing(open_only=False)) == len(blamed)

    dns.set("2.0.0.127.bl.test", "A")  # delisted
    clock.advance(2)
    await monitor.run_once()
    assert [r.state for r in await state.describe(settings.delivery.egress)] == [
        "healthy",
        "healthy",
    ]
    assert len(await suspensions.store.listing(open_only=True)) == len(blamed), (
        "suspensions stay until reviewed"
    )
    actions = [e.action for e in await suspensions.audit.entries()]
    assert actions[0] == "ip-listed" and actions.count("suspend") == len(blamed)


async def test_listed_sender_domain_suspends_its_users(redis, clock, dns):
    for login in ("user1", "user2"):
        await add_sender(redis, login)
    settings = settings_for(dns)
    monitor, suspensions, _, _ = monitor_for(redis, clock, settings)
    traffic = TrafficLog(redis)
    await traffic.record_senders("user1", ["shop.example"], clock.now())
    await traffic.record_senders("user2", ["clean.example"], clock.now())
    dns.set("shop.example.dbl.test", "A", "127.0.1.2")
    await monitor.run_once()
    (s,) = await suspensions.store.listing(open_only=True)
    assert s.account == "user1" and s.reason == "sender domain shop.example listed on dbl.test"


async def test_lookup_failures_never_suspend(redis, clock, dns):
    await add_sender(redis, "big")
    settings = settings_for(dns, lookup_timeout="200ms")
    monitor, suspensions, state, _ = monitor_for(redis, clock, settings)
    await TrafficLog(redis).record_delivery("127.0.0.2", "big", clock.now())
    dns.set("2.0.0.127.bl.test", "A", "127.255.255.254")  # the list refuses us
    dns.silence("3.0.0.127.bl.test")
    await monitor.run_once()
    assert [r.state for r in await state.describe(settings.delivery.egress)] == [
        "healthy",
        "healthy",
    ]
    assert await suspensions.store.listing(open_only=False) == []
