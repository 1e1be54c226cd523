"""Egress rotation (pure) and the shared state of the IPs (Redis)."""

from __future__ import annotations

from collections import Counter

import pytest

from relay.config import Egress
from relay.delivery.egress import EgressPool, EgressStatus
from relay.delivery.egress_state import EgressState

POOL = [Egress(ip=f"127.0.0.{n}", helo=f"out{n}.relay.test") for n in (2, 3, 4)]


def ips(pool: EgressPool, domain: str, count: int) -> list[str]:
    return [egress.ip for egress in (pool.next(domain) for _ in range(count)) if egress]


def test_empty_pool_lets_the_system_choose() -> None:
    assert EgressPool([]).next("example.com") is None


def test_each_domain_rotates_over_every_address() -> None:
    pool = EgressPool(POOL)
    assert ips(pool, "a.test", 6) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"] * 2
    assert Counter(ips(pool, "b.test", 30)) == {"127.0.0.2": 10, "127.0.0.3": 10, "127.0.0.4": 10}


def test_rotation_of_one_domain_ignores_the_others_and_case() -> None:
    pool = EgressPool(POOL)
    first = ips(pool, "a.test", 1)
    ips(pool, "b.test", 5)
    assert first + ips(pool, "A.test.", 2) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def test_new_domains_start_on_successive_addresses() -> None:
    pool = EgressPool(POOL)
    assert [ips(pool, f"d{n}.test", 1)[0] for n in range(6)] == [e.ip for e in POOL] * 2


def test_counters_are_bounded() -> None:
    pool = EgressPool(POOL, max_domains=2)
    for n in range(100):
        pool.next(f"d{n}.test")
    assert len(pool._next) == 2
    assert pool.next("d99.test") is not None


# --- skipping unusable IPs (pure) ---


def test_pick_skips_unusable_ones_without_doubling_the_next_ones_share() -> None:
    pool = EgressPool(POOL)
    usable = lambda egress: egress.ip != "127.0.0.3"  # noqa: E731
    picked = [e.ip for e in (pool.pick("a.test", usable) for _ in range(6)) if e]
    assert picked == ["127.0.0.2", "127.0.0.4"] * 3


def test_pick_returns_none_when_nothing_is_usable() -> None:
    pool = EgressPool(POOL)
    assert pool.pick("a.test", lambda egress: False) is None
    assert ips(pool, "a.test", 1) == ["127.0.0.2"], "the turn is kept"


def test_status_says_why_an_ip_is_not_usable() -> None:
    status = EgressStatus(
        disabled={"127.0.0.2": "maintenance"},
        listed={"127.0.0.3": "zen"},
        cooling={"127.0.0.4": 100.0},
    )
    assert [status.why_not(e.ip, 50.0) for e in POOL] == [
        "disabled: maintenance",
        "listed: zen",
        "cooling down",
    ]
    assert status.usable("127.0.0.4", 100.0) and not status.usable("127.0.0.4", 99.9)
    assert status.why_not("127.0.0.9", 0.0) is None


# --- the shared state in Redis ---


@pytest.fixture
def state(redis, clock) -> EgressState:
    return EgressState(redis, clock, cooldown=600, cooldown_after=2)


async def test_disable_enable_and_listing(state: EgressState, clock) -> None:
    await state.disable("127.0.0.2", "abuse desk asked")
    await state.set_listed("127.0.0.3", "zen.spamhaus.org: 127.0.0.2")
    snapshot = await state.snapshot("x.test")
    assert not snapshot.usable("127.0.0.2", clock.now())
    assert snapshot.listed == {"127.0.0.3": "zen.spamhaus.org: 127.0.0.2"}
    reports = await state.describe(POOL)
    assert [(r.ip, r.state) for r in reports] == [
        ("127.0.0.2", "disabled"),
        ("127.0.0.3", "listed"),
        ("127.0.0.4", "healthy"),
    ]
    assert reports[0].disabled == ("abuse desk asked", clock.now())
    assert await state.enable("127.0.0.2") and not await state.enable("127.0.0.2")
    assert await state.clear_listed("127.0.0.3") and not await state.clear_listed("127.0.0.3")
    assert {r.state for r in await state.describe(POOL)} == {"healthy"}


async def test_block_cools_at_once_failures_after_the_threshold(state: EgressState, clock) -> None:
    until = await state.record_block("127.0.0.2", "a.test")
    assert until == clock.now() + 600
    assert await state.record_failure("127.0.0.3", "a.test") is None
    assert (await state.snapshot("a.test")).failures == {"127.0.0.3": 1}
    assert await state.record_failure("127.0.0.3", "a.test") == clock.now() + 600
    snapshot = await state.snapshot("a.test")
    assert set(snapshot.cooling) == {"127.0.0.2", "127.0.0.3"} and snapshot.failures == {}
    assert (await state.snapshot("b.test")).cooling == {}
    first, *_ = await state.describe(POOL)
    assert first.cooling == (("a.test", clock.now() + 600),) and first.state == "cooling"
    clock.advance(601)
    assert (await state.snapshot("a.test")).cooling == {}
    assert {r.state for r in await state.describe(POOL)} == {"healthy"}


async def test_success_forgets_failures_and_enable_ends_cool_downs(
    state: EgressState, clock
) -> None:
    await state.record_failure("127.0.0.2", "a.test")
    await state.record_success("127.0.0.2", "a.test")
    assert await state.record_failure("127.0.0.2", "a.test") is None, "counting starts over"
    await state.record_block("127.0.0.2", "a.test")
    await state.record_block("127.0.0.2", "b.test")
    assert not await state.enable("127.0.0.2"), "was not disabled"
    assert (await state.snapshot("a.test")).cooling == {}
    assert (await state.snapshot("b.test")).cooling == {}


async def test_ips_no_longer_configured_are_still_shown(state: EgressState) -> None:
    await state.disable("192.0.2.1", "old")
    [*_, extra] = await state.describe(POOL)
    assert (extra.ip, extra.helo, extra.state) == ("192.0.2.1", None, "disabled")
    assert extra.as_dict()["disabled"] == {"reason": "old", "since": extra.disabled[1]}


async def test_every_key_shares_one_cluster_slot(state: EgressState, redis) -> None:
    await state.disable("127.0.0.2", "x")
    await state.set_listed("127.0.0.3", "y")
    await state.record_block("127.0.0.4", "a.test")
    await state.record_failure("127.0.0.2", "b.test")
    keys = [k.decode() async for k in redis.scan_iter("*")]
    assert len(keys) == 5 and all(k.startswith("{egress}:") for k in keys)
