"""Concurrency per destination."""

from __future__ import annotations

import asyncio

from relay.delivery.limits import DestinationLimiter, site_of


def test_a_site_is_its_set_of_servers() -> None:
    assert site_of([("mx2.x", 25), ("mx1.x", 25), ("mx1.x", 25)]) == "mx1.x:25,mx2.x:25"
    assert site_of([]) == "-"


async def test_at_most_the_limit_runs_and_idle_sites_are_forgotten() -> None:
    limiter = DestinationLimiter(2)
    running = peak = 0
    gate = asyncio.Event()

    async def use(site: str) -> None:
        nonlocal running, peak
        async with limiter.slot(site):
            running += 1
            peak = max(peak, running)
            await gate.wait()
            running -= 1

    tasks = [asyncio.create_task(use("a")) for _ in range(5)] + [asyncio.create_task(use("b"))]
    for _ in range(5):
        await asyncio.sleep(0)
    assert running == 3 and limiter.active("a") == 5  # 2 of "a" run, 3 wait; 1 of "b"
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == 3 and limiter.active("a") == 0
    assert limiter._slots == {} and limiter._users == {}
