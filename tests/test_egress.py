"""Egress rotation."""

from __future__ import annotations

from collections import Counter

from relay.config import Egress
from relay.delivery.egress import EgressPool

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
