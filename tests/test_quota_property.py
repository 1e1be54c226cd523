"""The Lua store and the Python reference answer the same, step by step, on random sequences
of reserve / commit / release / plan changes / suspensions / time moving (across minutes,
the 24 h boundary and idle gaps longer than the window)."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quota import Plan, QuotaStore, ReferenceQuota
from relay.redis_client import connect

START = 1_800_000_000.0
OWNER = "prop"

plan_ids = st.sampled_from(["p1", "p2", "p3"])
txs = st.sampled_from(["t1", "t2", "t3", "t4"])
plan_op = st.tuples(
    st.just("plan"),
    plan_ids,
    st.integers(1, 6),
    st.none() | st.integers(1, 5),
    st.none() | st.integers(-7200, 7200),
    st.none() | st.integers(60, 30 * 3600),
)
reserve_op = st.tuples(st.just("reserve"), txs, st.sampled_from(["a@x.com", "B@x.com", "b@x.com"]))
advance_op = st.tuples(
    st.just("advance"),
    # within a second and a minute, and on either side of the 24 h expiry of a bucket
    st.sampled_from(
        [
            0.5,
            1,
            1.5,
            30,
            59,
            60,
            61,
            3600,
            86339,
            86340,
            86399,
            86400,
            86401,
            86459,
            86460,
            86461,
            200000,
        ]
    ),
)
# Reservations and time dominate, as in real traffic; the rest changes the rules meanwhile.
operations = st.one_of(
    reserve_op,
    reserve_op,
    reserve_op,
    reserve_op,
    advance_op,
    advance_op,
    st.tuples(st.just("commit"), txs),
    st.tuples(st.just("release"), txs),
    plan_op,
    st.tuples(st.just("unplan"), plan_ids),
    st.tuples(st.just("suspend"), st.booleans()),
    st.tuples(st.just("unsuspend")),
)
FIRST_PLAN = ("plan", "p0", 5, None, None, None)


async def replay(url: str, steps: list[tuple]) -> None:
    redis = connect(url, timeout=5)
    await redis.flushall()
    store = QuotaStore(redis, default_per_minute=4, per_recipient=3)
    model = ReferenceQuota(default_per_minute=4, per_recipient=3)
    now = START
    try:
        for n, step in enumerate([FIRST_PLAN, *steps]):
            kind = step[0]
            if kind == "plan":
                _, pid, daily, per_minute, starts, expires = step
                begin = None if starts is None else START + starts
                end = None if expires is None else now + expires
                if begin is not None and end is not None and end <= begin:
                    continue
                plan = Plan(pid, daily, per_minute, starts=begin, expires=end)
                await store.add_plan(OWNER, plan)
                model.add_plan(OWNER, plan)
            elif kind == "unplan":
                model.remove_plan(OWNER, step[1])
                if any(p.id == step[1] for p in await store.plans(OWNER)):
                    await store.remove_plan(OWNER, step[1])
            elif kind == "reserve":
                got = await store.reserve(OWNER, step[1], step[2], now)
                want = model.reserve(OWNER, step[1], step[2], now)
                assert got == want, (n, step, got, want)
            elif kind == "commit":
                await store.commit(OWNER, step[1])
                model.commit(OWNER, step[1])
            elif kind == "release":
                got_back = await store.release(OWNER, step[1], now)
                assert got_back == model.release(OWNER, step[1], now), (n, step)
            elif kind == "advance":
                now += step[1]
            elif kind == "suspend":
                await store.suspend(OWNER, "abuse", permanent=step[1])
                model.suspend(OWNER, "abuse", permanent=step[1])
            else:
                await store.unsuspend(OWNER)
                model.unsuspend(OWNER)
            usage = await store.usage(OWNER, now)
            assert usage.used == model.used(OWNER, now), (n, step)
    finally:
        await redis.aclose()


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(operations, min_size=1, max_size=80))
def test_lua_store_agrees_with_reference(redis_server, steps):
    asyncio.run(replay(redis_server.url, steps))
