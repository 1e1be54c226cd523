"""Notices go only to verified senders, and count on the sender account's limits.

The delivery engine on a fake clock, real Redis, real sinks: a message whose reverse-path
was not a verified identity of its account gets no notice at all (backscatter), and each
notice sent uses one unit of the account's quota; an account over its limits gets none.
"""

from __future__ import annotations

import structlog.testing

from quota import Plan, QuotaStore
from relay.queue import DsnRequest, RecipientDsn
from relay.sink import Sink
from tests.support.engine import SENDER, engine, report_fields, sink_on

NO_SUCH_USER = "550 5.1.1 no such user"


def quota_for(redis) -> QuotaStore:
    return QuotaStore(redis, default_per_minute=1000, per_recipient=100)


async def test_unverified_sender_gets_no_notice_of_any_kind(redis, clock):
    """A client names a third party as the reverse-path and asks for everything: failure
    with the whole message, success: the third party gets nothing."""
    third_party = Sink()
    dest = Sink(reply_for_rcpt=lambda peer, rcpt: NO_SUCH_USER if "bad" in rcpt else None)
    dsn = DsnRequest(
        ret="FULL",
        recipients=(
            ("ok@dest.test", RecipientDsn(frozenset({"SUCCESS"}))),
            ("bad@dest.test", RecipientDsn(frozenset({"FAILURE"}))),
        ),
    )
    async with (
        sink_on(dest) as route,
        sink_on(third_party) as victim_route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": victim_route}) as e,
    ):
        with structlog.testing.capture_logs() as logs:
            await e.submit("ok@dest.test", "bad@dest.test", dsn=dsn, sender_verified=False)
            await e.step()
            assert await e.queue.count() == 0
    assert [m.rcpt_tos for m in dest.messages] == [("ok@dest.test",)]
    assert third_party.messages == [], "no notice to a sender the account did not verify"
    suppressed = [x for x in logs if x["event"] == "notice.suppressed"]
    assert suppressed and suppressed[0]["reason"] == "unverified sender"
    assert suppressed[0]["to"] == SENDER


async def test_verified_sender_still_gets_its_notice(redis, clock):
    notice_sink = Sink()
    dest = Sink(reply_for_rcpt=lambda peer, rcpt: NO_SUCH_USER)
    async with (
        sink_on(dest) as route,
        sink_on(notice_sink) as notice_route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        await e.submit("bob@dest.test", sender_verified=True)
        await e.step()
    [notice] = notice_sink.messages
    assert notice.rcpt_tos == (SENDER,) and notice.mail_from == ""


async def test_a_notice_is_charged_to_the_sender_account(redis, clock):
    quota = quota_for(redis)
    await quota.add_plan("alice", Plan("p", daily=5))
    notice_sink = Sink()
    dest = Sink(reply_for_rcpt=lambda peer, rcpt: NO_SUCH_USER)
    async with (
        sink_on(dest) as route,
        sink_on(notice_sink) as notice_route,
        engine(
            redis, clock, quota=quota, routes={"dest.test": route, "sender.test": notice_route}
        ) as e,
    ):
        await e.submit("bob@dest.test")  # queued directly: the message itself is not counted
        await e.step()
    assert len(notice_sink.messages) == 1
    assert (await quota.usage("alice", clock.now())).used == 1, "the notice used one unit"


async def test_an_account_over_its_quota_gets_no_notice(redis, clock):
    quota = quota_for(redis)
    await quota.add_plan("alice", Plan("p", daily=1))
    taken = quota.new_transaction()
    assert (await quota.reserve("alice", taken, "x@dest.test", clock.now())).allowed
    await quota.commit("alice", taken)  # the day's only unit is used
    notice_sink = Sink()
    dest = Sink(reply_for_rcpt=lambda peer, rcpt: NO_SUCH_USER)
    async with (
        sink_on(dest) as route,
        sink_on(notice_sink) as notice_route,
        engine(
            redis, clock, quota=quota, routes={"dest.test": route, "sender.test": notice_route}
        ) as e,
    ):
        with structlog.testing.capture_logs() as logs:
            await e.submit("bob@dest.test")
            await e.step()
            assert await e.queue.count() == 0
    assert notice_sink.messages == []
    [suppressed] = [x for x in logs if x["event"] == "notice.suppressed"]
    assert suppressed["reason"] == "over_quota" and suppressed["account"] == "alice"
    assert (await quota.usage("alice", clock.now())).used == 1, "nothing more was counted"


async def test_a_delay_notice_already_sent_gives_its_unit_back(redis, clock):
    """Two domains still retried past the delay threshold: the message gets one delay
    notice; the second job's notice is dropped by the queue and its unit is released."""
    quota = quota_for(redis)
    await quota.add_plan("alice", Plan("p", daily=10))
    notice_sink = Sink()
    busy = Sink(reply_for_rcpt=lambda peer, rcpt: "451 4.3.0 later")
    async with (
        sink_on(busy) as route,
        sink_on(notice_sink) as notice_route,
        engine(
            redis,
            clock,
            quota=quota,
            routes={"one.test": route, "two.test": route, "sender.test": notice_route},
        ) as e,
    ):
        await e.submit("a@one.test", "b@two.test")
        await e.step()
        await e.step(61 * 60)  # both jobs pass the delay threshold in one round
    assert len(notice_sink.messages) == 1
    assert (await quota.usage("alice", clock.now())).used == 1


async def test_the_delay_notice_reports_the_other_domain_from_its_stored_error(redis, clock):
    """The job that sends the delay notice also reports the message's other delayed domain,
    from that job's last error as stored (code, status, text and the MX that said it)."""
    notice_sink = Sink()
    busy = Sink(reply_for_rcpt=lambda peer, rcpt: "451 4.3.0 later")
    async with (
        sink_on(busy) as route,
        sink_on(notice_sink) as notice_route,
        engine(
            redis,
            clock,
            routes={"one.test": route, "two.test": route, "sender.test": notice_route},
        ) as e,
    ):
        await e.submit("a@one.test", "b@two.test")
        await e.step()
        await e.step(61 * 60)
    [notice] = notice_sink.messages
    _, *recipients = report_fields(notice)
    assert sorted(r["final-recipient"] for r in recipients) == [  # either job may send it
        "rfc822; a@one.test",
        "rfc822; b@two.test",
    ]
    for block in recipients:
        assert (block["action"], block["status"]) == ("delayed", "4.3.0"), block
        assert block["remote-mta"] == "dns; 127.0.0.1", block
        assert block["diagnostic-code"] == "smtp; 451 4.3.0 later", block
