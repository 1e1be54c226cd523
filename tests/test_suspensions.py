"""Suspensions through the service: escalation, holds, audit, notices — real Redis, fake clock."""

from __future__ import annotations

import email
import email.policy

import pytest

from quota import QuotaStore, Verdict
from relay.abuse.factory import suspension_service
from relay.accounts import AccountStore
from relay.config import Settings
from relay.queue import Envelope, QueueStore
from reputation import Kind, NotAllowed, Status
from tests.conftest import add_sender
from tests.support.spool import temp_spool

DAY = 86400.0


@pytest.fixture
async def world(redis, clock):
    await add_sender(redis, "alice")
    await AccountStore(redis, clock).set_password("alice", "a new password")  # keeps the plan
    account = await redis.hset("acct:{alice}", "email", "alice@customer.example")
    assert account == 0
    settings = Settings(
        hostname="relay.test",
        reputation={"operators": ["noc@provider.example"], "support": "help@provider.example"},
        spool={"dir": temp_spool().root},
    )
    quota = QuotaStore(redis, default_per_minute=100, per_recipient=100)
    return (
        suspension_service(redis, settings, clock, quota),
        quota,
        QueueStore.from_settings(redis, clock, settings),
    )


async def rcpt_verdict(quota, clock):
    return (await quota.reserve("alice", "tx", "bob@example.com", clock.now())).verdict


async def notices(queue) -> list[tuple[str, str]]:
    """(recipient, decoded text) of the notices the relay queued, in no particular order."""
    out = []
    for m in await queue.list_messages(limit=100):
        if m.account == "system":
            raw = (await queue.load(m.id)).body
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            out.append((m.recipients[0], f"{parsed['Subject']}\n{parsed.get_content()}"))
    return out


async def test_escalation_from_password_change_to_denial(world, clock, redis):
    service, quota, queue = world
    queued = await queue.enqueue(
        Envelope("alice@customer.example", ("x@example.com",), "alice"), b"Subject: hi\r\n\r\nx\r\n"
    )

    first = await service.suspend(
        "alice", Kind.REPUTATION, "IP listed", {"ip": "127.0.0.2"}, actor="system:monitor"
    )
    assert first.terms.offence == 1 and first.terms.user_may_lift
    assert await rcpt_verdict(quota, clock) is Verdict.SUSPENDED
    assert (await queue.load(queued)).meta.held_at is not None, "queued mail is held"
    again = await service.suspend(
        "alice", Kind.REPUTATION, "still listed", {}, actor="system:monitor"
    )
    assert again.id == first.id, "more evidence is not one more offence"

    (lifted,) = await service.password_changed("alice")
    assert lifted.status is Status.LIFTED and lifted.closed_by == "user:alice"
    assert await rcpt_verdict(quota, clock) is Verdict.ALLOWED
    assert (await queue.load(queued)).meta.held_at is None, "held mail is released"

    second = await service.suspend("alice", Kind.ABUSE, "complaint", {}, actor="operator:eve")
    assert second.terms.offence == 2 and not second.terms.user_may_lift
    assert await service.password_changed("alice") == []
    with pytest.raises(NotAllowed, match="not before"):
        await service.lift(second.id, actor="operator:eve", reason="asked nicely")
    clock.advance(5 * DAY)
    await service.lift(second.id, actor="operator:eve", reason="5 days served")
    assert await rcpt_verdict(quota, clock) is Verdict.ALLOWED

    third = await service.suspend("alice", Kind.ABUSE, "complaint again", {}, actor="operator:eve")
    assert third.terms.offence == 3 and third.terms.not_before == clock.now() + 10 * DAY
    await service.deny(third.id, actor="operator:eve", reason="repeat offender")
    decision = await quota.reserve("alice", "tx", "bob@example.com", clock.now())
    assert decision.verdict is Verdict.SUSPENDED and decision.permanent

    actions = [(e.action, e.actor) for e in await service.audit.entries(account="alice")]
    assert actions == [
        ("suspend", "system:monitor"),
        ("evidence", "system:monitor"),
        ("lift", "user:alice"),
        ("suspend", "operator:eve"),
        ("lift", "operator:eve"),
        ("suspend", "operator:eve"),
        ("deny", "operator:eve"),
    ]
    sent = await notices(queue)
    to_customer = [body for to, body in sent if to == "alice@customer.example"]
    to_noc = [body for to, body in sent if to == "noc@provider.example"]
    assert len(to_customer) == 6 and len(to_noc) == 3  # 3 suspensions, 2 lifts, 1 denial
    assert sum("changing the password" in text for text in to_customer) == 1
    assert all("help@provider.example" in text for text in to_customer)
    assert sum("After repeated offences" in text for text in to_customer) == 1
    assert sum("stays suspended" in text for text in to_customer) == 1


async def test_forced_lift_and_admin_suspension(world, clock):
    service, quota, _ = world
    await service.suspend("alice", Kind.ABUSE, "one", {}, actor="x")
    first = (await service.store.of_account("alice"))[0]
    await service.lift(first.id, actor="operator:eve", reason="ok")
    second = await service.suspend("alice", Kind.ABUSE, "two", {}, actor="x")
    await service.lift(second.id, actor="operator:eve", reason="false listing", force=True)
    (entry,) = [
        e
        for e in await service.audit.entries(account="alice")
        if e.subject == second.id and e.action == "lift"
    ]
    assert entry.evidence["forced"] is True
    admin = await service.suspend("alice", Kind.ADMIN, "unpaid", {}, actor="operator:eve")
    assert admin.terms.offence == 0 and await rcpt_verdict(quota, clock) is Verdict.SUSPENDED
    with pytest.raises(NotAllowed):
        await service.lift(admin.id, actor="user:alice", reason="x", by_operator=False)
    await service.lift(admin.id, actor="operator:eve", reason="paid")
    assert await rcpt_verdict(quota, clock) is Verdict.ALLOWED
