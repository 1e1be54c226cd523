"""The fleet-wide shaping gate on a real Redis: paced rates, connection leases, reactions."""

from __future__ import annotations

import pytest

from relay.config import DeliverySettings
from relay.delivery.rates import FleetGate
from relay.delivery.shaping import ShapingRule, parse_shaping

NOW = 1_800_000_000.0


def rule(text: str) -> ShapingRule:
    text = f'[[rule]]\nname = "r"\ndomains = ["d.test"]\n{text}'
    return parse_shaping(text, DeliverySettings()).rule_for("d.test")


@pytest.fixture
def gate(redis) -> FleetGate:
    return FleetGate(redis, lease=60)


async def test_a_rate_is_paced_and_reservations_queue_in_order(gate) -> None:
    r = rule('rate_per_ip = "10/s"\n')
    times = [(await gate.admit(r, "r", "127.0.0.2", NOW, 0.25)) for _ in range(5)]
    assert [a.verdict for a in times] == ["admitted", "admitted", "admitted", "later", "later"]
    assert [round(a.at - NOW, 3) for a in times[:3]] == [0.0, 0.1, 0.2]
    assert round(times[3].at - NOW, 3) == 0.3  # nothing was reserved by the refusals
    other_ip = await gate.admit(r, "r", "127.0.0.3", NOW, 0)
    assert (other_ip.verdict, other_ip.at) == ("admitted", NOW)  # per egress IP


async def test_several_rates_all_hold(gate) -> None:
    r = rule('rate_per_ip = ["2/min", "3/h"]\n')
    ats = [(await gate.admit(r, "r", "ip", NOW, 7200)).at - NOW for _ in range(4)]
    assert [round(a) for a in ats] == [0, 1200, 2400, 3600]


async def test_connection_limits_are_leases_given_back_or_ending(gate) -> None:
    r = rule("max_connections_per_ip = 2\nmax_connections = 3\n")
    a1 = await gate.admit(r, "r", "ip1", NOW, 0)
    a2 = await gate.admit(r, "r", "ip1", NOW, 0)
    assert a1.verdict == a2.verdict == "admitted" and a1.token and a1.token != a2.token
    assert (await gate.admit(r, "r", "ip1", NOW, 0)).verdict == "busy"  # per IP
    assert (await gate.admit(r, "r", "ip2", NOW, 0)).verdict == "admitted"
    assert (await gate.admit(r, "r", "ip3", NOW, 0)).verdict == "busy"  # in all
    await gate.release("r", "ip1", a1.token)
    assert (await gate.admit(r, "r", "ip1", NOW, 0)).verdict == "admitted"
    # a process that died never gives its slots back: they end with the lease
    assert (await gate.admit(r, "r", "ip1", NOW + 61, 0)).verdict == "admitted"


async def test_a_reaction_suspends_or_slows_one_ip_for_the_whole_fleet(gate, redis) -> None:
    r = rule(
        '[[rule.reactions]]\ncode = 421\naction = "move"\nduration = "10m"\n'
        '[[rule.reactions]]\ncode = 451\naction = "slow"\nrate = "1/min"\nduration = "1h"\n'
    )
    move, slow = r.reactions
    until = await gate.react("r", "ip1", move, NOW)
    assert until == NOW + 600
    held = await gate.admit(r, "r", "ip1", NOW + 1, 10)
    assert (held.verdict, held.at) == ("suspended", NOW + 600)
    assert await gate.suspended("r", ["ip1", "ip2"], NOW + 1) == {"ip1": NOW + 600}
    assert (await gate.admit(r, "r", "ip2", NOW + 1, 0)).verdict == "admitted"
    assert (await gate.admit(r, "r", "ip1", NOW + 601, 0)).verdict == "admitted"
    await gate.react("r", "ip2", slow, NOW)
    first = await gate.admit(r, "r", "ip2", NOW, 120)
    second = await gate.admit(r, "r", "ip2", NOW, 120)
    assert (first.at - NOW, second.at - NOW) == (0, 60)
    # another process (another gate, same Redis) sees the same state
    other = FleetGate(redis, lease=60)
    assert (await other.admit(r, "r", "ip1", NOW + 2, 0)).verdict == "suspended"
    assert (await other.admit(r, "r", "ip2", NOW, 0)).verdict == "later"


async def test_every_key_of_a_scope_shares_one_cluster_slot(gate, redis) -> None:
    r = rule('rate_per_ip = "1/s"\nmax_connections = 1\n')
    await gate.admit(r, "default/a.test", "ip", NOW, 0)
    keys = [k.decode() for k in await redis.keys("shape:*")]
    assert keys and all(k.startswith("shape:{default/a.test}:") for k in keys)
