"""The fleet-wide shaping gate on a real Redis: paced rates, connection leases, reactions;
and the worker's side of it (send times handed out locally, leases kept while in use)."""

from __future__ import annotations

import asyncio

import pytest

from relay.clock import SystemClock
from relay.config import DeliverySettings
from relay.delivery.rates import FleetGate, Shaper
from relay.delivery.shaping import ShapingRule, parse_shaping
from tests.conftest import command_calls

NOW = 1_800_000_000.0


def rule(text: str) -> ShapingRule:
    text = f'[[rule]]\nname = "r"\ndomains = ["d.test"]\n{text}'
    return parse_shaping(text, DeliverySettings()).rule_for("d.test")


@pytest.fixture
def gate(redis) -> FleetGate:
    return FleetGate(redis, lease=60)


async def test_a_rate_is_paced_and_reservations_queue_in_order(gate) -> None:
    r = rule('rate_per_ip = "10/s"\n')
    got = [await gate.reserve(r, "r", "127.0.0.2", NOW, 0.25) for _ in range(5)]
    assert [g.verdict for g in got] == ["admitted", "admitted", "admitted", "later", "later"]
    assert [round(g.at - NOW, 3) for g in got[:3]] == [0.0, 0.1, 0.2]
    assert round(got[3].at - NOW, 3) == 0.3  # nothing was reserved by the refusals
    other_ip = await gate.reserve(r, "r", "127.0.0.3", NOW, 0)
    assert (other_ip.verdict, other_ip.at) == ("admitted", NOW)  # per egress IP


async def test_a_run_of_send_times_is_reserved_at_once_within_100_ms(gate) -> None:
    fast = rule('rate_per_ip = "1000/s"\n')
    got = await gate.reserve(fast, "r", "ip", NOW, 0, times=500)
    assert (got.count, got.step) == (100, 0.001)
    after = await gate.reserve(fast, "r", "ip", NOW, 1, times=1)
    assert round(after.at - NOW, 3) == 0.1  # the next process's times come after them
    slow = rule('rate_per_ip = "5/s"\n')
    assert (await gate.reserve(slow, "s", "ip", NOW, 0, times=50)).count == 1


async def test_several_rates_all_hold(gate) -> None:
    r = rule('rate_per_ip = ["2/min", "3/h"]\n')
    ats = [(await gate.reserve(r, "r", "ip", NOW, 7200)).at - NOW for _ in range(4)]
    assert [round(a) for a in ats] == [0, 1200, 2400, 3600]


async def test_connection_limits_are_leases_given_back_or_ending(gate) -> None:
    r = rule("max_connections_per_ip = 2\nmax_connections = 3\n")

    async def take(ip: str, now: float = NOW) -> str:
        got = await gate.reserve(r, "r", ip, now, 0, times=0, connection=True)
        return got.token if got.verdict == "admitted" else got.verdict

    t1, t2 = await take("ip1"), await take("ip1")
    assert len(t1) == len(t2) == 16 and t1 != t2
    assert await take("ip1") == "busy"  # per IP
    assert len(await take("ip2")) == 16
    assert await take("ip3") == "busy"  # in all
    await gate.release("r", "ip1", [t1])
    assert len(await take("ip1")) == 16
    # a process that died never gives its leases back: they end by themselves
    assert len(await take("ip1", NOW + 61)) == 16
    await gate.renew("r", "ip1", [t2], NOW + 61)  # an ended lease is not revived
    assert await gate._redis.zscore("shape:{r}:conns:ip1", t2) is None


async def test_a_reaction_suspends_or_slows_one_ip_for_the_whole_fleet(gate, redis) -> None:
    r = rule(
        '[[rule.reactions]]\ncode = 421\naction = "move"\nduration = "10m"\n'
        '[[rule.reactions]]\ncode = 451\naction = "slow"\nrate = "1/min"\nduration = "1h"\n'
    )
    move, slow = r.reactions
    until = await gate.react("r", "ip1", move, NOW)
    assert until == NOW + 600
    held = await gate.reserve(r, "r", "ip1", NOW + 1, 10)
    assert (held.verdict, held.at) == ("suspended", NOW + 600)
    assert await gate.suspended("r", ["ip1", "ip2"], NOW + 1) == {"ip1": NOW + 600}
    assert (await gate.reserve(r, "r", "ip2", NOW + 1, 0)).verdict == "admitted"
    assert (await gate.reserve(r, "r", "ip1", NOW + 601, 0)).verdict == "admitted"
    await gate.react("r", "ip2", slow, NOW)
    first = await gate.reserve(r, "r", "ip2", NOW, 120)
    second = await gate.reserve(r, "r", "ip2", NOW, 120)
    assert (first.at - NOW, second.at - NOW, first.step) == (0, 60, 60)
    # another process (another gate, same Redis) sees the same state
    other = FleetGate(redis, lease=60)
    assert (await other.reserve(r, "r", "ip1", NOW + 2, 0)).verdict == "suspended"
    assert (await other.reserve(r, "r", "ip2", NOW, 0)).verdict == "later"


async def test_every_key_of_a_scope_shares_one_cluster_slot(gate, redis) -> None:
    r = rule('rate_per_ip = "1/s"\nmax_connections = 1\n')
    await gate.reserve(r, "default/a.test", "ip", NOW, 0, connection=True)
    keys = [k.decode() async for k in redis.scan_iter("shape:*")]
    assert keys and all(k.startswith("shape:{default/a.test}:") for k in keys)


async def test_two_shapers_hand_out_disjoint_paced_send_times(redis) -> None:
    r = rule('rate_per_ip = "200/s"\n')
    shapers = [Shaper(FleetGate(redis, lease=60), SystemClock(), 10) for _ in range(2)]
    sent: list[float] = []
    before = await command_calls(redis, "evalsha")

    async def send(shaper: Shaper) -> None:
        admission = await shaper.admit(r, "r", "ip")
        assert admission is not None and admission.verdict == "admitted"
        sent.append(asyncio.get_running_loop().time())
        shaper.release(r, "r", "ip", admission)

    await asyncio.gather(*(send(shapers[n % 2]) for n in range(60)))
    sent.sort()
    # 200/s: no 200 ms window holds more than 40 (a few ms of scheduling slack)
    assert min(sent[i + 40] - sent[i] for i in range(len(sent) - 40)) >= 0.2 - 0.02
    # send times came in runs, not one by one
    assert await command_calls(redis, "evalsha") - before < 20


async def test_a_connection_lease_serves_many_messages_and_goes_back_when_idle(redis) -> None:
    r = rule('max_connections_per_ip = 1\nidle_timeout = "50ms"\n')
    shaper = Shaper(FleetGate(redis, lease=60), SystemClock(), 0.2)
    for _ in range(5):
        admission = await shaper.admit(r, "r", "ip")
        assert admission is not None and admission.verdict == "admitted"
        shaper.release(r, "r", "ip", admission)
    assert await redis.zcard("shape:{r}:conns:ip") == 1  # one lease for the five
    first = await shaper.admit(r, "r", "ip")
    assert first is not None and first.verdict == "admitted"
    other = Shaper(FleetGate(redis, lease=60), SystemClock(), 0.1)
    busy = await other.admit(r, "r", "ip")  # the other process waits, then gives up
    assert busy is not None and busy.verdict == "busy"
    shaper.release(r, "r", "ip", first)
    await asyncio.sleep(0.2)  # idle past the rule's idle timeout: the lease goes back
    assert await redis.zcard("shape:{r}:conns:ip") == 0
    taken = await other.admit(r, "r", "ip")
    assert taken is not None and taken.verdict == "admitted"
    await other.close()
    assert await redis.zcard("shape:{r}:conns:ip") == 0


async def test_the_worker_side_stays_bounded_over_many_destinations(redis) -> None:
    r = rule('[[rule.reactions]]\ncode = 421\naction = "move"\nduration = "1h"\n')
    shaper = Shaper(FleetGate(redis, lease=60), SystemClock(), 1, max_local=10)
    for n in range(50):
        admission = await shaper.admit(r, f"default/d{n}.test", "ip")
        shaper.release(r, f"default/d{n}.test", "ip", admission)
    assert len(shaper._local) <= 10
