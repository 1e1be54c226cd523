"""The quarantine store and desk on a real Redis and spool, with a fake clock: delete,
expiry per kind, the weekly digest, releases (quota, malware, node), the supervised part."""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets

import pytest

from quota import Plan, QuotaStore
from relay.abuse.audit import AuditLog
from relay.abuse.notify import SYSTEM_ACCOUNT, Notifier
from relay.accounts import AccountStore
from relay.content.desk import QuarantineDesk
from relay.content.errors import KeptAsEvidence, NotInQuarantine, ReleaseRefused
from relay.content.quarantine import Held, QuarantineStore
from relay.queue import QueueStore
from tests.support.spool import temp_spool

DAY = 86400.0
BODY = b"From: alice@example.org\r\nSubject: Cheap offer\r\n\r\nBuy now.\r\n"


@pytest.fixture
async def desk(redis, clock):
    spool = temp_spool()
    queue = QueueStore(redis, clock, spool, node="node-a")
    quota = QuotaStore(redis, default_per_minute=1000, per_recipient=100)
    await quota.add_plan("alice", Plan("test", daily=3, per_minute=1000))
    await AccountStore(redis, clock).add("alice", "a long password", "alice@customer.test")
    store = QuarantineStore(
        redis, spool, clock, "node-a", {Held.MALWARE: 365 * DAY, Held.SPAM: 30 * DAY}
    )
    return QuarantineDesk(
        store=store,
        queue=queue,
        quota=quota,
        audit=AuditLog(redis, clock),
        notifier=Notifier(queue, sender="postmaster@relay.test", operators=(), support="help@x"),
        accounts=AccountStore(redis, clock),
        clock=clock,
    )


async def hold(desk: QuarantineDesk, kind: Held, recipients=("bob@example.com",)) -> str:
    body_id = secrets.token_hex(8)
    stored = await desk.store.spool.write(body_id, BODY)
    record = await desk.store.hold(
        kind,
        body_id=body_id,
        size=stored.size,
        head=stored.head,
        account="alice",
        mail_from="alice@example.org",
        recipients=recipients,
        reason="score 8.00" if kind is Held.SPAM else "Test.EICAR.NDB",
        prefix=b"Received: from test\r\n",
    )
    assert not desk.store.spool.exists(body_id), "moved, not copied"
    return record.id


async def test_delete_removes_the_body_and_the_record(desk):
    qid = await hold(desk, Held.SPAM)
    assert desk.store.spool.path(qid).read_bytes() == BODY
    await desk.delete(qid, actor="operator:test")
    assert not desk.store.spool.exists(qid)
    with pytest.raises(NotInQuarantine):
        await desk.store.get(qid)
    assert await desk.store.listing() == [] and await desk.store.on_node() == set()


async def test_expiry_follows_each_kinds_retention(desk, clock):
    spam, malware = await hold(desk, Held.SPAM), await hold(desk, Held.MALWARE)
    clock.advance(30 * DAY - 1)
    assert await desk.sweep() == 0
    clock.advance(2)
    assert await desk.sweep() == 1
    assert not desk.store.spool.exists(spam) and desk.store.spool.exists(malware)
    clock.advance(334 * DAY)
    assert await desk.sweep() == 0, "malware is kept a year"
    clock.advance(1 * DAY)
    assert await desk.sweep() == 1
    assert not desk.store.spool.exists(malware) and await desk.store.listing() == []


async def test_release_queues_once_with_its_prefix_and_counts_on_the_quota(desk, redis, clock):
    qid = await hold(desk, Held.SPAM, ("bob@example.com", "carol@example.net"))
    queue_id = await desk.release(qid, actor="user:alice", operator=False)
    assert queue_id == qid
    stored = await desk._queue.load(qid)
    assert stored.body == b"Received: from test\r\n" + BODY
    assert stored.meta.recipients == ("bob@example.com", "carol@example.net")
    assert (await desk._quota.usage("alice", clock.now())).used == 2
    with pytest.raises(NotInQuarantine):
        await desk.release(qid, actor="user:alice", operator=False)
    (entry,) = [e for e in await desk._audit.entries(account="alice")]
    assert (entry.action, entry.actor, entry.subject) == ("quarantine-release", "user:alice", qid)


async def test_release_over_quota_is_refused_and_the_message_stays(desk):
    qid = await hold(desk, Held.SPAM, tuple(f"r{i}@example.com" for i in range(4)))
    with pytest.raises(ReleaseRefused, match="Daily quota 3 reached"):
        await desk.release(qid, actor="operator:test", operator=True)
    assert (await desk.store.get(qid)).id == qid
    assert (await desk._quota.usage("alice", desk._clock.now())).used == 0, "given back"
    await desk.delete(qid, actor="operator:test")


async def test_malware_release_is_for_operators_only(desk):
    qid = await hold(desk, Held.MALWARE)
    with pytest.raises(ReleaseRefused, match="only an operator"):
        await desk.release(qid, actor="user:alice", operator=False)
    with pytest.raises(KeptAsEvidence, match="only an operator can delete"):
        await desk.delete(qid, actor="user:alice", operator=False)
    assert await desk.release(qid, actor="operator:test", operator=True) == qid


async def test_another_nodes_body_is_not_released_here(desk, redis, clock):
    qid = await hold(desk, Held.SPAM)
    elsewhere = QuarantineStore(redis, desk.store.spool, clock, "node-b", {})
    with pytest.raises(ReleaseRefused, match="on node node-a"):
        await elsewhere.claim(qid)


async def test_digest_is_queued_to_the_accounts_contact(desk):
    await hold(desk, Held.SPAM)
    await hold(desk, Held.MALWARE)
    assert await desk.send_digests("help@x") == 1
    (notice_id,) = await desk._queue.message_ids()
    stored = await desk._queue.load(notice_id)
    assert stored.meta.account == SYSTEM_ACCOUNT and stored.meta.mail_from == ""
    assert stored.meta.recipients == ("alice@customer.test",)
    parsed = email.message_from_bytes(stored.body, policy=email.policy.default)
    assert parsed["Subject"] == "Your relay quarantine: 2 message(s) held for alice"
    text = parsed.get_content()
    assert "1 suspected spam, 1 with malware" in text and text.count("Cheap offer") == 2


async def test_the_supervised_part_sweeps_once_per_interval(desk, redis, clock):
    await hold(desk, Held.SPAM)
    clock.advance(31 * DAY)
    stop = asyncio.Event()
    part = asyncio.create_task(
        desk.run(stop, redis, sweep_every=DAY, digest_every=0, support="x", check_every=0.05)
    )
    for _ in range(100):
        if not await desk.store.listing():
            break
        await asyncio.sleep(0.02)
    assert await desk.store.listing() == []
    await hold(desk, Held.SPAM)
    clock.advance(31 * DAY)
    await asyncio.sleep(0.3)
    assert len(await desk.store.listing()) == 1, "the next sweep waits for its day"
    stop.set()
    await asyncio.wait_for(part, 5)
