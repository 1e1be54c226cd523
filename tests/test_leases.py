"""Short leases kept alive by a heartbeat while a delivery runs, and a node that takes its
own leased jobs back at once when it restarts."""

from __future__ import annotations

import asyncio

from relay.clock import SystemClock
from relay.queue import Envelope, QueueStore
from relay.sink import Sink
from tests.support.engine import BODY, engine
from tests.support.spool import temp_spool


async def test_a_delivery_longer_than_its_lease_is_not_taken_by_another_worker(redis):
    """The sink answers DATA after 1.5 s; the lease is 0.5 s. Without the heartbeat the
    second worker claims the job meanwhile and the message arrives twice."""

    async def slow(peer: str, rcpt: str) -> str | None:
        await asyncio.sleep(1.5)
        return None

    sink = Sink(reply_for_rcpt=slow)
    clock = SystemClock()
    async with sink.serving() as server:
        port = server.sockets[0].getsockname()[1]
        routes = {"*": f"127.0.0.1:{port}"}
        async with (
            engine(redis, clock, routes=routes, lease="500ms", poll_interval="50ms") as first,
            engine(
                redis, clock, queue=first.queue, routes=routes, lease="500ms", poll_interval="50ms"
            ) as second,
        ):
            await first.submit("bob@dest.test")
            stop = asyncio.Event()
            runs = [asyncio.create_task(e.worker.run(stop)) for e in (first, second)]
            await sink.wait_for(1, timeout=10)
            await asyncio.sleep(1.0)  # a second delivery would have started by now
            stop.set()
            await asyncio.gather(*runs)
    assert len(sink.messages) == 1 and await first.queue.count() == 0


async def test_a_restarted_node_takes_back_its_leased_jobs_at_once(redis, clock):
    spool = temp_spool()
    before = QueueStore(redis, clock, spool, node="node-a")
    other = QueueStore(redis, clock, temp_spool(), node="node-b")
    mine = await before.enqueue(Envelope("a@x.org", ("b@y.com",), "alice"), BODY)
    clock.advance(1)  # due one after the other: each node claims its own
    theirs = await other.enqueue(Envelope("a@x.org", ("c@y.com",), "alice"), BODY)
    clock.advance(1)
    assert [j.message_id for j in await before.claim(1, lease=900)] == [mine]
    assert [j.message_id for j in await other.claim(1, lease=900)] == [theirs]
    assert await before.claim(10, lease=900) == [], "leased: nothing is due"

    after = QueueStore(redis, clock, spool, node="node-a")  # the node restarted
    assert await after.reclaim() == 1, "only this node's leases"
    (job,) = await after.claim(10, lease=900)
    assert job.message_id == mine, "node-b's lease stands"
