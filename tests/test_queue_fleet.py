"""Each node of a fleet has its own queue (its bodies are in its own spool); operator actions
and account holds reach every node's queue."""

from __future__ import annotations

import time

import pytest

from relay.config import RedisSettings
from relay.embedded_redis import EmbeddedRedis
from relay.errors import NotFound, NotReplicated
from relay.queue import Envelope, QueueKeys, QueueStore
from relay.redis_client import Wait, connect
from tests.conftest import client_of
from tests.support.spool import temp_spool


def envelope(rcpt: str, account: str = "alice") -> Envelope:
    return Envelope(mail_from="sender@example.org", recipients=(rcpt,), account=account)


@pytest.fixture
def nodes(redis, clock):
    return (
        QueueStore(redis, clock, temp_spool(), node="node-a"),
        QueueStore(redis, clock, temp_spool(), node="node-b"),
    )


async def test_a_node_claims_only_the_mail_whose_body_it_holds(nodes):
    a, b = nodes
    mid = await a.enqueue(envelope("x@y.com"), b"body")
    assert await b.claim(10, lease=60) == []
    (job,) = await a.claim(10, lease=60)
    assert job.message_id == mid and (await a.load_claimed(job)).body == b"body"


async def test_an_account_held_on_one_node_is_held_on_every_node_now_and_later(nodes, clock):
    a, b = nodes
    on_a = await a.enqueue(envelope("x@y.com"), b"1")
    on_b = await b.enqueue(envelope("z@y.com"), b"2")
    other = await b.enqueue(envelope("z@y.com", account="bob"), b"3")
    assert await a.hold_account("alice") == 2
    later = await b.enqueue(envelope("w@y.com"), b"4")
    assert [j.message_id for j in await b.claim(10, lease=60)] == [other]
    assert await a.claim(10, lease=60) == []
    assert (await b.meta(later)).held_at is not None, "queued after the hold: held too"
    assert sorted(await a.messages_of("alice")) == sorted([on_a, on_b, later])

    assert await b.release_account("alice") == 3
    clock.advance(1)
    assert [j.message_id for j in await a.claim(10, lease=60)] == [on_a]
    assert sorted(j.message_id for j in await b.claim(10, lease=60)) == sorted([on_b, later])


async def test_a_node_that_was_away_starts_with_the_fleets_held_accounts(redis, clock, nodes):
    a, b = nodes
    await b.enqueue(envelope("x@y.com", account="bob"), b"1")  # b knows bob is not held
    await a.hold_account("alice")
    await a.release_account("alice")
    await a.hold_account("carol")
    await redis.srem(b.keys.held_accounts, "carol")  # as if b missed the hold while away
    await redis.sadd(b.keys.held_accounts, "alice")  # and the release
    restarted = QueueStore(redis, clock, b.spool, node="node-b")
    await restarted.register()
    assert await redis.smembers(b.keys.held_accounts) == {b"carol"}


async def test_operator_actions_find_a_message_on_any_node(nodes, clock):
    a, b = nodes
    mid = await b.enqueue(envelope("x@y.com"), b"body")
    assert await a.node_of(mid) == "node-b"
    assert (await a.meta(mid)).recipients == ("x@y.com",)
    assert await a.hold(mid) is True
    assert [j.held for j in await a.jobs_of(mid)] == [True]
    assert await a.release(mid) is True
    assert await a.count() == 1 and [m.id for m in await a.list_messages()] == [mid]
    with pytest.raises(NotFound):
        await a.load(mid)  # its body is in node-b's spool
    await a.delete(mid)
    assert await b.count() == 0 and await b.claim(10, lease=60) == []
    assert b.spool.path(mid).exists(), "left to node-b's `relay spool check --fix`"


async def test_listing_merges_the_nodes_oldest_first(nodes, clock):
    a, b = nodes
    first = await b.enqueue(envelope("x@y.com"), b"1")
    clock.advance(1)
    second = await a.enqueue(envelope("x@y.com"), b"2")
    clock.advance(1)
    third = await b.enqueue(envelope("x@y.com"), b"3")
    assert [m.id for m in await a.list_messages()] == [first, second, third]
    assert [m.id for m in await b.list_messages(2)] == [first, second]
    assert await a.message_ids() == {second}, "this node's own (to compare with its spool)"


async def test_an_enqueue_that_reaches_too_few_replicas_is_not_acknowledged(tmp_path, clock):
    """One server, no replica: WAIT answers 0 after its timeout, and the enqueue is taken
    back and fails (the client gets a 4xx and retries) instead of acknowledging mail a
    failover could lose."""
    wait = Wait.from_settings(RedisSettings(wait_replicas=1, wait_timeout="100ms"))
    assert wait == Wait(1, 0.1) and Wait.from_settings(RedisSettings()) is None
    server = EmbeddedRedis(tmp_path / "redis")  # one server, whatever the suite runs on
    server.start()
    redis = connect(server.url, timeout=5.0)
    try:
        queue = QueueStore(redis, clock, temp_spool(), wait=wait)
        started = time.monotonic()
        with pytest.raises(NotReplicated, match="reached 0 of 1 replicas"):
            await queue.enqueue(envelope("x@y.com"), b"body")
        assert 0.09 < time.monotonic() - started < 2
        assert await queue.count() == 0, "taken back: the client's retry is the one delivered"
    finally:
        await redis.aclose()
        server.stop()


async def test_an_enqueue_waits_for_its_replica_on_each_primary_of_a_cluster(redis_cluster, clock):
    """On the 3+3 cluster, WAIT goes to the primary of the queue's slot on the enqueue's own
    connection, and its replica confirms; nodes whose queues live on different primaries."""
    redis = client_of(redis_cluster)
    try:
        wait = Wait(1, 2.0)
        nodes = [f"node-{n}" for n in range(6)]
        primaries = {redis_cluster.primary_of(QueueKeys(node).due) for node in nodes}
        assert len(primaries) >= 2, "the nodes' queues spread over the primaries"
        for node in nodes:
            queue = QueueStore(redis, clock, temp_spool(), node=node, wait=wait)
            mid = await queue.enqueue(envelope("x@y.com"), b"body")
            assert (await queue.meta(mid)).recipients == ("x@y.com",)
    finally:
        await redis.aclose()


async def test_mail_queued_before_fleets_is_adopted_by_the_node(redis, clock):
    """A queue written by the version before fleets (every key under `{q}`, the body in
    this node's spool) is moved into this node's queue at its first start, held accounts
    and held messages as they were."""
    spool = temp_spool()
    await spool.write("0a0a0a01", b"queued before the upgrade")
    await spool.write("0a0a0a02", b"held before the upgrade")
    now = clock.now()
    for mid, rcpt, account in (("0a0a0a01", "x@y.com", "alice"), ("0a0a0a02", "z@y.com", "bob")):
        await redis.hset(
            f"{{q}}:msg:{mid}",
            mapping={
                "mail_from": "sender@example.org",
                "recipients": f'["{rcpt}"]',
                "account": account,
                "created_at": repr(now),
                "size": 20,
                "jobs_left": 1,
                "jobs": 1,
                "prefix": b"",
            },
        )
        await redis.hset(
            f"{{q}}:job:{mid}.0",
            mapping={
                "message_id": mid,
                "domain": "y.com",
                "recipients": f'["{rcpt}"]',
                "attempts": 0,
                "created_at": repr(now),
                "due_at": repr(now),
            },
        )
        await redis.zadd("{q}:messages", {mid: now})
        await redis.sadd(f"{{q}}:acct:{account}", mid)
    await redis.zadd("{q}:due", {"0a0a0a01.0": now})
    await redis.zadd("{q}:held", {"0a0a0a02.0": now})
    await redis.hset("{q}:msg:0a0a0a02", "held_at", repr(now))
    await redis.sadd("{q}:held_accounts", "bob")

    queue = QueueStore(redis, clock, spool, node="node-a")
    (job,) = await queue.claim(10, lease=60)
    assert (await queue.load_claimed(job)).body == b"queued before the upgrade"
    assert await queue.held_accounts() == ["bob"]
    assert await queue.messages_of("bob") == ["0a0a0a02"]
    assert [j.held for j in await queue.jobs_of("0a0a0a02")] == [True]
    assert await queue.count() == 2
    assert [k async for k in redis.scan_iter(match="{q}:*")] == []
