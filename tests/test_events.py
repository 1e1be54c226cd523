"""Events as the delivery engine and the complaint desk record them (fake clock, real Redis,
real sinks), retention, and the pure rules beside them."""

from __future__ import annotations

from relay.abuse.complaints import Complaint
from relay.abuse.factory import complaint_desk
from relay.app import quota_store
from relay.clock import FakeClock
from relay.config import Settings
from relay.events import EventDraft, EventStream, SuppressionList, event_recorder
from relay.events.model import Event, recipient_states, suppresses
from relay.events.recorder import reported_recipient
from relay.sink import Sink
from tests.conftest import add_sender
from tests.support.engine import engine, sink_on

MIN = 60.0
HOUR = 3600.0


async def test_deferred_delay_notice_then_expired(redis, clock):
    attempts = 0

    def always_busy(peer: str, rcpt: str) -> str:
        nonlocal attempts
        attempts += 1
        return "451 4.3.0 mailbox busy"

    notices = Sink()
    dest = Sink(reply_for_rcpt=always_busy)
    recorder = event_recorder(redis, Settings(), clock)
    async with (
        sink_on(dest) as route,
        sink_on(notices) as notice_route,
        engine(
            redis,
            clock,
            routes={"dest.test": route, "sender.test": notice_route},
            max_age="3h",
            events=recorder,
        ) as e,
    ):
        queue_id = await e.submit("bob@dest.test")
        await e.run_until_empty(15 * MIN, 20)
    events = await recorder.stream.of_message("alice", queue_id)
    kinds = [ev.kind for ev in events]
    assert kinds.count("deferred") == attempts - 1
    assert kinds.count("delay_notice") == 1 and kinds[-1] == "expired"
    first = events[0]
    assert first.kind == "deferred" and first.data["reply"] == "451 4.3.0 mailbox busy"
    assert first.data["next_attempt"] == first.at + 15 * MIN
    assert first.data["egress_ip"].startswith("127.0.0.")
    notice_at = kinds.index("delay_notice")
    assert events[notice_at].at - events[0].at >= HOUR  # delay_notice_after (60m)
    assert recipient_states(events)["bob@dest.test"]["status"] == "expired"
    assert await SuppressionList(redis, clock).list("alice") == []  # 4xx: never suppressed


async def test_a_complaint_is_an_event_and_suppresses_its_recipient(redis, clock, tmp_path):
    await add_sender(redis, "promo")
    settings = Settings()
    desk = complaint_desk(redis, settings, clock, quota_store(redis, settings))
    complaint = Complaint(
        feedback_type="abuse",
        reporter="fbl@isp.example",
        fields={"original-rcpt-to": "rfc822; Victim@ISP.example"},
        queue_id="1a2b3c4d5e6f7a8b",
    )
    await desk.against("promo", complaint, actor="operator:test")
    stream = EventStream(redis, clock, retention=30 * 86400)
    event, suppressed = await stream.of_message("promo", "1a2b3c4d5e6f7a8b")
    assert suppressed.kind == "suppressed"
    assert (event.kind, event.recipient) == ("complaint", "victim@isp.example")
    assert event.data == {"reporter": "fbl@isp.example", "feedback_type": "abuse"}
    [entry] = await SuppressionList(redis, clock).list("promo")
    assert entry.address == "victim@isp.example" and entry.source == "complaint"
    assert entry.reason == "complaint (abuse) from fbl@isp.example"
    kinds = [e.kind for e in await stream.since("promo")]
    assert kinds == ["complaint", "suppressed"]


async def test_retention_trims_by_the_relays_clock(redis):
    clock = FakeClock()
    stream = EventStream(redis, clock, retention=HOUR)
    await stream.append("alice", EventDraft("accepted", "q1", "a@x.test", clock.now()))
    clock.advance(30 * MIN)
    kept = await stream.append("alice", EventDraft("delivered", "q1", "a@x.test", clock.now()))
    clock.advance(45 * MIN)  # the first is 75 minutes old now, the second 45
    newest = await stream.append("alice", EventDraft("accepted", "q2", "b@x.test", clock.now()))
    assert [e.id for e in await stream.since("alice")] == [kept, newest]
    assert int(newest.split("-")[0]) == int(clock.now() * 1000)
    assert 0 < await redis.pttl("ev:{alice}") <= HOUR * 1000


async def test_ids_never_go_back_when_the_clock_does(redis):
    clock = FakeClock()
    stream = EventStream(redis, clock, retention=HOUR)
    first = await stream.append("alice", EventDraft("accepted", "q1", "a@x.test", 0))
    clock.advance(-5)
    second = await stream.append("alice", EventDraft("accepted", "q1", "b@x.test", 0))
    third = await stream.append("alice", EventDraft("accepted", "q1", "c@x.test", 0))
    assert second == first.split("-")[0] + "-1" and third == first.split("-")[0] + "-2"
    page = await stream.since("alice", first, limit=1)
    assert [e.recipient for e in page] == ["b@x.test"]


def test_only_mailbox_failures_suppress():
    assert suppresses("5.1.1") and suppresses("5.1.10")
    assert not suppresses("5.7.1") and not suppresses("5.2.2") and not suppresses("4.1.1")


def test_the_reported_recipient_is_one_address_or_none():
    assert reported_recipient({"original-rcpt-to": "<Bob@Example.com>"}) == "bob@example.com"
    assert reported_recipient({"original-rcpt-to": "rfc822;bob@example.com"}) == "bob@example.com"
    assert reported_recipient({"original-rcpt-to": "redacted"}) == ""
    assert reported_recipient({"original-rcpt-to": "a@b.com, c@d.com"}) == ""
    assert reported_recipient({}) == ""


def test_recipient_state_keeps_delivery_beside_a_complaint():
    def event(n: int, kind: str) -> Event:
        return Event(f"{n}-0", "alice", kind, "q1", "bob@x.test", float(n))

    states = recipient_states(
        [event(1, "accepted"), event(2, "deferred"), event(3, "delivered"), event(4, "complaint")]
    )
    assert states["bob@x.test"]["status"] == "delivered"
    assert states["bob@x.test"]["also"] == ["complaint"]


async def test_a_reviewed_complaint_assigned_by_an_operator_is_an_event_too(redis, clock):
    await add_sender(redis, "promo")
    settings = Settings()
    desk = complaint_desk(redis, settings, clock, quota_store(redis, settings))
    unattributed = Complaint(
        feedback_type="abuse",
        reporter="fbl@isp.example",
        fields={"original-rcpt-to": "victim@isp.example"},
        problem="the original message has no Message-ID",
    )
    review = await desk.receive(unattributed, actor="operator:test")
    stream = EventStream(redis, clock, retention=30 * 86400)
    assert await stream.since("promo") == []
    await desk.assign(review.id, "promo", actor="operator:test", reason="ours")
    assert [e.kind for e in await stream.since("promo")] == ["complaint", "suppressed"]
    assert [e.address for e in await SuppressionList(redis, clock).list("promo")] == [
        "victim@isp.example"
    ]


async def test_accepted_events_ride_with_the_enqueue_even_after_redis_forgot_its_scripts(
    redis, tmp_path
):
    """They are sent in the enqueue's round trip (EVALSHA in a pipeline): a Redis that lost
    its scripts (restarted) gets the append again on its own, not a lost event."""
    from relay.queue import Envelope, QueueStore
    from relay.redis_client import Along
    from tests.support.spool import temp_spool

    clock = FakeClock()
    stream = EventStream(redis, clock, retention=HOUR)
    queue = QueueStore(redis, clock, temp_spool())
    for n in range(2):
        await redis.script_flush()
        spooled = await queue.spool.write(queue.new_id(), b"body")
        drafts = [EventDraft("accepted", spooled.id, "a@x.test", clock.now())]
        along: list[Along] = [stream.along("alice", drafts)]
        envelope = Envelope(mail_from="s@example.org", recipients=("a@x.test",), account="alice")
        await queue.enqueue_spooled(envelope, spooled, b"", along)
        events = await stream.of_message("alice", spooled.id)
        assert [(e.kind, e.recipient) for e in events] == [("accepted", "a@x.test")], n
