"""Quota semantics, run against the Redis store and the Python reference alike."""

from __future__ import annotations

import asyncio

import pytest

from quota import Plan, QuotaStore, RateSpec, ReferenceQuota, Verdict
from quota.errors import InvalidValue

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)
assert T0 % 60 == 0


class ReferenceBackend:
    """ReferenceQuota behind the store's async interface."""

    def __init__(self) -> None:
        self.model = ReferenceQuota(default_per_minute=4, per_recipient=3)

    async def reserve(self, owner, tx, rcpt, now, units=1):
        return self.model.reserve(owner, tx, rcpt, now, units)

    async def commit(self, owner, tx):
        self.model.commit(owner, tx)

    async def release(self, owner, tx, now):
        return self.model.release(owner, tx, now)

    async def add_plan(self, owner, plan):
        self.model.add_plan(owner, plan)

    async def suspend(self, owner, reason, *, permanent=False):
        self.model.suspend(owner, reason, permanent)

    async def unsuspend(self, owner):
        self.model.unsuspend(owner)


@pytest.fixture(params=["redis", "reference"])
def backend(request, redis):
    if request.param == "redis":
        return QuotaStore(redis, default_per_minute=4, per_recipient=3)
    return ReferenceBackend()


async def fill(backend, n, now, tx="t", prefix="r"):
    return [await backend.reserve("acct", tx, f"{prefix}{i}@x.com", now) for i in range(n)]


async def test_plans_stack_and_refusal_says_when_a_slot_frees(backend):
    await backend.add_plan("acct", Plan("a", daily=3, per_minute=100))
    await backend.add_plan("acct", Plan("b", daily=2, per_minute=100))
    decisions = await fill(backend, 5, T0 + 5)
    assert [d.used for d in decisions] == [1, 2, 3, 4, 5] and decisions[-1].limit == 5
    refused = await backend.reserve("acct", "t", "z@x.com", T0 + 10)
    assert refused.verdict is Verdict.OVER_QUOTA and refused.limit == 5
    # sent in minute T0: counts until the end of that minute, 24 h later
    assert refused.retry_at == T0 + 86400 + 60


async def test_the_window_frees_exactly_at_the_announced_time(backend):
    await backend.add_plan("acct", Plan("a", daily=2, per_minute=100))
    await fill(backend, 2, T0 + 5)
    free_at = T0 + 86400 + 60
    late = await backend.reserve("acct", "u", "y@x.com", free_at - 0.001)
    assert late.verdict is Verdict.OVER_QUOTA
    again = await backend.reserve("acct", "u", "y@x.com", free_at)
    assert again.allowed and again.used == 1


async def test_upgrade_takes_effect_at_once(backend):
    await backend.add_plan("acct", Plan("a", daily=1, per_minute=100))
    await fill(backend, 1, T0)
    assert (await backend.reserve("acct", "t", "y@x.com", T0 + 1)).verdict is Verdict.OVER_QUOTA
    await backend.add_plan("acct", Plan("b", daily=10, per_minute=100))
    assert (await backend.reserve("acct", "t", "y@x.com", T0 + 2)).allowed


async def test_per_minute_rate(backend):
    await backend.add_plan("acct", Plan("a", daily=1000))  # default: 4 per minute
    assert all(d.allowed for d in await fill(backend, 4, T0 + 10))
    refused = await backend.reserve("acct", "t", "y@x.com", T0 + 20)
    assert refused.verdict is Verdict.OVER_RATE and refused.limit == 4
    assert refused.retry_at == T0 + 10 + 61  # the second of the first unit, a minute later
    assert not (await backend.reserve("acct", "t", "y@x.com", T0 + 70.999)).allowed
    assert (await backend.reserve("acct", "t", "y@x.com", T0 + 71)).allowed


async def test_per_recipient_rate_is_per_address_and_minute(backend):
    await backend.add_plan("acct", Plan("a", daily=1000, per_minute=100))
    for n in range(3):
        assert (await backend.reserve("acct", "t", "Bob@x.com" if n else "bob@x.com", T0)).allowed
    refused = await backend.reserve("acct", "t", "bob@x.com", T0 + 1)
    assert refused.verdict is Verdict.OVER_RECIPIENT_RATE and refused.retry_at == T0 + 60
    assert (await backend.reserve("acct", "t", "alice@x.com", T0 + 1)).allowed
    assert (await backend.reserve("acct", "t", "bob@x.com", T0 + 60)).allowed


async def test_release_gives_back_and_commit_keeps(backend):
    await backend.add_plan("acct", Plan("a", daily=3, per_minute=100))
    await fill(backend, 2, T0, tx="kept")
    await backend.commit("acct", "kept")
    await fill(backend, 1, T0, tx="dropped", prefix="d")
    assert await backend.release("acct", "dropped", T0 + 1) == 1
    assert await backend.release("acct", "dropped", T0 + 1) == 0, "releasing twice gives nothing"
    assert await backend.release("acct", "kept", T0 + 1) == 0, "committed units stay counted"
    assert (await backend.reserve("acct", "x", "q@x.com", T0 + 2)).used == 3


async def test_expired_and_not_yet_started_plans(backend):
    assert (await backend.reserve("acct", "t", "a@x.com", T0)).verdict is Verdict.EXPIRED
    await backend.add_plan("acct", Plan("old", daily=5, expires=T0))
    await backend.add_plan("acct", Plan("future", daily=5, starts=T0 + 3600))
    assert (await backend.reserve("acct", "t", "a@x.com", T0)).verdict is Verdict.EXPIRED
    assert (await backend.reserve("acct", "t", "a@x.com", T0 + 3600)).allowed
    assert (await backend.reserve("acct", "t", "a@x.com", T0 - 1)).allowed  # "old" still on


async def test_suspension_comes_first(backend):
    await backend.add_plan("acct", Plan("a", daily=5))
    await backend.suspend("acct", "reputation", permanent=False)
    d = await backend.reserve("acct", "t", "a@x.com", T0)
    assert d.verdict is Verdict.SUSPENDED and d.reason == "reputation" and not d.permanent
    await backend.suspend("acct", "denied", permanent=True)
    assert (await backend.reserve("acct", "t", "a@x.com", T0)).permanent
    await backend.unsuspend("acct")
    assert (await backend.reserve("acct", "t", "a@x.com", T0)).allowed


async def test_fifty_concurrent_callers_never_overshoot(redis):
    store = QuotaStore(redis, default_per_minute=10_000, per_recipient=10_000)
    await store.add_plan("busy", Plan("a", daily=137))

    async def session(n: int) -> int:
        tx = f"s{n}"
        allowed = 0
        for i in range(10):
            allowed += (await store.reserve("busy", tx, f"r{n}.{i}@x.com", T0 + i)).allowed
        await store.commit("busy", tx)
        return allowed

    assert sum(await asyncio.gather(*(session(n) for n in range(50)))) == 137
    assert (await store.usage("busy", T0 + 20)).used == 137


async def test_a_blocked_recipient_is_refused_in_the_same_step_and_costs_nothing(redis):
    """The relay's suppression list is looked up by the reservation script (one round trip
    per RCPT): a listed recipient is BLOCKED with its entry, and no unit is reserved."""
    store = QuotaStore(redis, default_per_minute=4, per_recipient=3)
    await store.add_plan("acct", Plan("a", daily=10, per_minute=50))
    await store.suspend("acct", "held")  # the list comes first: the reply names the recipient
    await redis.hset("sup:{acct}", "gone@x.com", '{"why": 1}')
    listed = ("sup:{acct}", "gone@x.com")
    refused = await store.reserve("acct", "t", "gone@x.com", T0, blocked=listed)
    assert (refused.verdict, refused.reason) == (Verdict.BLOCKED, '{"why": 1}')
    await store.unsuspend("acct")
    free = await store.reserve("acct", "t", "here@x.com", T0, blocked=("sup:{acct}", "here@x.com"))
    assert free.verdict is Verdict.ALLOWED
    assert (await store.usage("acct", T0)).used == 1, "only the recipient not listed counts"


async def test_usage_view(redis):
    store = QuotaStore(redis, default_per_minute=4, per_recipient=3)
    await store.add_plan("acct", Plan("a", daily=10, per_minute=50))
    for hour in range(3):
        for i in range(hour + 1):
            await store.reserve("acct", "t", f"r{i}@x.com", T0 + hour * 3600)
    usage = await store.usage("acct", T0 + 2 * 3600 + 30)
    assert (usage.used, usage.daily, usage.remaining, usage.state) == (6, 10, 4, "active")
    assert usage.per_minute_used == 3 and usage.per_minute == 50
    assert [n for _, n in usage.hourly][-3:] == [1, 2, 3] and sum(n for _, n in usage.hourly) == 6
    assert usage.next_free_at == T0 + 86400 + 60
    assert (await store.usage("acct", T0 + 86400 + 60)).used == 5
    await store.add_plan("acct", Plan("b", daily=1, expires=T0 + 10))
    assert (await store.usage("acct", T0)).as_dict()["plans"][1]["active"] is True


@pytest.mark.parametrize(
    "text,count,seconds,canonical",
    [
        ("100/min", 100, 60, "100/min"),
        ("1000/day", 1000, 86400, "1000/day"),
        ("10/s", 10, 1, "10/s"),
        ("60 / h", 60, 3600, "60/h"),
        ("5/10min", 5, 600, "5/10m"),
    ],
)
def test_rate_specs_round_trip(text, count, seconds, canonical):
    rate = RateSpec.parse(text)
    assert (rate.count, rate.period.seconds, str(rate)) == (count, seconds, canonical)
    assert RateSpec.parse(str(rate)) == rate


@pytest.mark.parametrize("bad", ["", "100", "0/min", "-1/min", "10/fortnight", "ten/min"])
def test_bad_rates(bad):
    with pytest.raises(InvalidValue):
        RateSpec.parse(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"daily": 0},
        {"daily": -5},
        {"daily": 5, "per_minute": 0},
        {"daily": 5, "starts": T0, "expires": T0},
    ],
)
def test_bad_plans(kwargs):
    with pytest.raises(InvalidValue):
        Plan("x", **kwargs)
