"""The delivery engine end to end on a fake clock: retries, notices, egress failover, holds.

Real Redis, real SMTP sinks on 127.0.0.x, a real DNS server; the clock moves only when told,
so seven days of retries run in seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import structlog.testing

from relay.queue import LEASE_LOST, DsnRequest, RecipientDsn
from relay.sink import Sink
from tests.conftest import command_calls
from tests.support.dns_server import DnsServer
from tests.support.engine import BODY, SENDER, engine, parse, report_fields, sink_on

MIN = 60.0
DAY = 86400.0


@pytest.fixture
async def sender_sink() -> AsyncIterator[tuple[Sink, str]]:
    """The sender's own MX, where notices arrive."""
    sink = Sink()
    async with sink_on(sink) as address:
        yield sink, address


def notices(sink: Sink) -> list[str]:
    """The Action of each notice received, in order (one string per notice)."""
    return [",".join(block["action"] for block in report_fields(n)[1:]) for n in sink.messages]


async def test_temporary_failures_are_retried_every_15_minutes_with_one_delay_notice(
    redis, clock, sender_sink
):
    notice_sink, notice_route = sender_sink
    attempts: list[float] = []

    def refuse_five_times(peer: str, rcpt: str) -> str | None:
        attempts.append(clock.now())
        return "451 4.3.0 mailbox busy, try later" if len(attempts) <= 5 else None

    dest = Sink(reply_for_rcpt=refuse_five_times)
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        start = clock.now()
        queue_id = await e.submit("bob@dest.test")
        await e.step()
        for _ in range(10):
            await e.step(15 * MIN)
        assert await e.queue.count() == 0
    assert [a - start for a in attempts] == [n * 15 * MIN for n in range(6)]
    [delivered] = dest.messages
    assert delivered.data.endswith(BODY) and delivered.mail_from == SENDER
    [notice] = notice_sink.messages
    assert notice.mail_from == "" and notice.rcpt_tos == (SENDER,)
    message = parse(notice)
    assert message["Subject"] == "Delayed Mail (still being retried)"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["In-Reply-To"] == "<original-1@sender.test>"
    per_message, per_rcpt = report_fields(notice)
    assert per_message["reporting-mta"] == "dns; relay.test"
    assert per_message["x-relay-queue-id"] == queue_id
    assert per_rcpt["final-recipient"] == "rfc822; bob@dest.test"
    assert per_rcpt["action"] == "delayed" and per_rcpt["status"] == "4.3.0"
    assert per_rcpt["diagnostic-code"] == "smtp; 451 4.3.0 mailbox busy, try later"
    assert per_rcpt["remote-mta"] == f"dns; {route.split(':')[0]}"
    assert "will-retry-until" in per_rcpt
    headers = next(p for p in message.iter_parts() if p.get_content_type() == "text/rfc822-headers")
    assert "Subject: engine test" in headers.get_content()
    assert "Hello Bob." not in notice.data.decode(), "a delay notice returns headers only"


async def test_always_451_gives_up_after_7_days_with_one_failure_notice(redis, clock, sender_sink):
    notice_sink, notice_route = sender_sink
    attempts = 0
    connections: list[str] = []

    def always_busy(peer: str, rcpt: str) -> str:
        nonlocal attempts
        attempts += 1
        return "451 4.3.0 try later"

    dest = Sink(reply_for_rcpt=always_busy, reply_for_connect=lambda ip: connections.append(ip))
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        start = clock.now()
        await e.submit("bob@dest.test")
        steps = await e.run_until_empty(15 * MIN, max_steps=700)
        assert clock.now() - start == pytest.approx(7 * DAY)
    assert 672 <= attempts <= 673 and steps == attempts - 1
    assert len(connections) == 8, "per egress IP, one session per 100 attempts"
    assert dest.count == 0
    assert notices(notice_sink) == ["delayed", "failed"]
    failure = notice_sink.messages[1]
    assert parse(failure)["Subject"] == "Undelivered Mail Returned to Sender"
    [_, rcpt] = report_fields(failure)
    assert rcpt["status"] == "4.4.7"
    assert rcpt["diagnostic-code"].startswith("X-Relay; delivery time expired")
    assert "451 4.3.0 try later" in rcpt["diagnostic-code"]


async def test_permanent_refusal_sends_a_failure_notice_at_once(redis, clock, sender_sink):
    notice_sink, notice_route = sender_sink
    dest = Sink(reply_for_rcpt=lambda peer, rcpt: "550 5.1.1 <bob@dest.test>: no such user")
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        await e.submit("bob@dest.test")
        await e.step()
        assert await e.queue.count() == 0, "the message and its notice are both gone"
    [notice] = notice_sink.messages
    assert parse(notice)["Subject"] == "Undelivered Mail Returned to Sender"
    [_, rcpt] = report_fields(notice)
    assert (rcpt["action"], rcpt["status"]) == ("failed", "5.1.1")
    assert rcpt["diagnostic-code"] == "smtp; 550 5.1.1 <bob@dest.test>: no such user"
    assert "last-attempt-date" in rcpt and "will-retry-until" not in rcpt


async def test_mixed_recipients_each_follow_their_own_path(redis, clock, sender_sink):
    notice_sink, notice_route = sender_sink
    later_tries = 0

    def policy(peer: str, rcpt: str) -> str | None:
        nonlocal later_tries
        if rcpt.startswith("gone"):
            return "550 5.1.1 no such user"
        if rcpt.startswith("later"):
            later_tries += 1
            return "451 4.2.1 over quota, later" if later_tries <= 2 else None
        return None

    dest = Sink(reply_for_rcpt=policy)
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        await e.submit("ok@dest.test", "later@dest.test", "gone@dest.test")
        await e.step()
        assert [m.rcpt_tos for m in dest.messages] == [("ok@dest.test",)]
        assert notices(notice_sink) == ["failed"], "the 550 is reported at once"
        assert report_fields(notice_sink.messages[0])[1]["final-recipient"].endswith(
            "gone@dest.test"
        )
        await e.step(15 * MIN)
        await e.step(15 * MIN)
        assert await e.queue.count() == 0
    assert [m.rcpt_tos for m in dest.messages] == [("ok@dest.test",), ("later@dest.test",)]
    assert notices(notice_sink) == ["failed"], "delivered within the hour: no delay notice"


@pytest.mark.parametrize(
    "greeting",
    [
        "421 4.7.0 [127.0.0.2] connection refused: too many errors from your IP",
        "554 5.7.1 Service unavailable; client host [127.0.0.2] blocked using a blocklist",
    ],
    ids=["421-refusal", "554-blocked"],
)
async def test_blocked_ip_fails_over_in_the_same_attempt_and_cools_down(
    redis, clock, sender_sink, greeting
):
    notice_sink, notice_route = sender_sink
    connections: list[str] = []

    def refuse_first_ip(peer: str) -> str | None:
        connections.append(peer)
        return greeting if peer == "127.0.0.2" else None

    dest = Sink(reply_for_connect=refuse_first_ip)
    async with (
        sink_on(dest) as route,
        engine(
            redis,
            clock,
            routes={"dest.test": route, "other.test": route, "sender.test": notice_route},
            cooldown="30m",
        ) as e,
    ):
        await e.submit("bob@dest.test")
        attempts = await e.step()
        assert connections == ["127.0.0.2", "127.0.0.3"]
        [message] = dest.messages
        assert message.peer == "127.0.0.3" and message.helo == "out3.relay.test"
        assert attempts == 1 and await e.queue.count() == 0, "delivered in the first attempt"
        status = await e.egress.snapshot("dest.test")
        assert status.cooling["127.0.0.2"] == clock.now() + 30 * MIN
        assert (await e.egress.snapshot("other.test")).cooling == {}, "only for that domain"

        for n in range(6):  # the rotation skips the cooling IP for that domain
            await e.submit(f"r{n}@dest.test")
        await e.step()
        assert "127.0.0.2" not in connections[2:]
        assert {m.peer for m in dest.messages[1:]} == {"127.0.0.3", "127.0.0.4", "127.0.0.5"}

        await e.step(30 * MIN + 1)
        assert (await e.egress.snapshot("dest.test")).usable("127.0.0.2", clock.now())
    assert notice_sink.count == 0


async def test_ip_that_cannot_connect_fails_over_and_cools_down_when_another_could(
    redis, clock, sender_sink
):
    _, notice_route = sender_sink

    async def silent_to_first_ip(peer: str) -> str | None:
        if peer == "127.0.0.2":
            await asyncio.Event().wait()  # never greets: the client's connect timeout fires
        return None

    dest = Sink(reply_for_connect=silent_to_first_ip)
    async with (
        sink_on(dest) as route,
        engine(
            redis,
            clock,
            routes={"dest.test": route, "sender.test": notice_route},
            cooldown_after=1,
            timeouts={"connect": "300ms", "command": "5s", "data": "5s"},
        ) as e,
    ):
        await e.submit("bob@dest.test")
        await e.step()
        [message] = dest.messages
        assert message.peer == "127.0.0.3"
        assert "127.0.0.2" in (await e.egress.snapshot("dest.test")).cooling


async def test_unreachable_destination_blames_no_ip(redis, clock, sender_sink):
    _, notice_route = sender_sink
    async with engine(
        redis,
        clock,
        routes={"dest.test": "127.0.0.1:9", "sender.test": notice_route},
        cooldown_after=1,
        failover_ips=2,
    ) as e:
        queue_id = await e.submit("bob@dest.test")
        await e.step()
        [job] = await e.queue.jobs_of(queue_id)
        assert job.attempts == 1 and job.last_error is not None
        assert (job.last_error.code, job.last_error.status) == (451, "4.4.1")
        assert job.last_error.mx == "127.0.0.1" and job.last_error.egress_ip is not None
        status = await e.egress.snapshot("dest.test")
        assert status.cooling == {} and status.failures == {}


async def test_every_ip_out_of_rotation_defers_without_connecting(redis, clock, sender_sink):
    _, notice_route = sender_sink
    dest = Sink()
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        await e.egress.disable("127.0.0.2", "maintenance")
        await e.egress.set_listed("127.0.0.3", "zen.example: 127.0.0.2")
        for ip in ("127.0.0.4", "127.0.0.5"):
            await e.egress.record_block(ip, "dest.test")
        queue_id = await e.submit("bob@dest.test")
        await e.step()
        [job] = await e.queue.jobs_of(queue_id)
        assert job.last_error is not None and job.last_error.status == "4.4.5"
        assert job.last_error.text.startswith("no egress IP usable for dest.test")
        assert "127.0.0.2 disabled: maintenance" in job.last_error.text
        assert dest.count == 0
        await e.egress.enable("127.0.0.2")
        await e.step(15 * MIN)
        assert [m.peer for m in dest.messages] == ["127.0.0.2"]


@pytest.mark.parametrize(
    ("zone", "status"),
    [
        ("dest.test. MX 0 .\n", "5.1.10"),
        ("", "5.1.2"),  # dest.test does not exist
    ],
    ids=["null-mx", "nxdomain"],
)
async def test_domains_that_cannot_receive_mail_fail_at_once(
    redis, clock, sender_sink, zone, status
):
    notice_sink, notice_route = sender_sink
    async with (
        DnsServer(zone + 'sender.test. TXT "x"\n') as dns,
        engine(redis, clock, dns=dns.settings(), routes={"sender.test": notice_route}) as e,
    ):
        await e.submit("bob@dest.test")
        await e.step()
        assert await e.queue.count() == 0
    [notice] = notice_sink.messages
    [_, rcpt] = report_fields(notice)
    assert (rcpt["action"], rcpt["status"]) == ("failed", status)
    assert rcpt["diagnostic-code"].startswith("X-Relay; dest.test: ")
    assert "remote-mta" not in rcpt


async def test_dns_server_failure_is_retried(redis, clock, sender_sink):
    notice_sink, notice_route = sender_sink
    dest = Sink()
    async with sink_on(dest, "127.0.0.10") as route, DnsServer() as dns:
        port = int(route.split(":")[1])
        dns.load("dest.test. MX 10 mx.dest.test.\nmx.dest.test. A 127.0.0.10\n")
        dns.servfail("dest.test")
        async with engine(
            redis, clock, dns=dns.settings(), mx_port=port, routes={"sender.test": notice_route}
        ) as e:
            queue_id = await e.submit("bob@dest.test")
            await e.step()
            [job] = await e.queue.jobs_of(queue_id)
            assert job.attempts == 1 and job.last_error is not None
            assert (job.last_error.code, job.last_error.status) == (451, "4.4.3")
            dns.servfail("dest.test", on=False)
            await e.step(15 * MIN)
            assert await e.queue.count() == 0
    [message] = dest.messages
    assert message.rcpt_tos == ("bob@dest.test",) and message.peer in {"127.0.0.2", "127.0.0.3"}
    assert notice_sink.count == 0


async def test_no_notice_for_mail_from_the_null_sender(redis, clock, sender_sink):
    notice_sink, notice_route = sender_sink
    dest = Sink(reply_for_rcpt=lambda peer, rcpt: "550 5.1.1 no such user")
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        await e.submit("bob@dest.test", sender="")
        await e.step()
        assert await e.queue.count() == 0
    assert notice_sink.count == 0


async def test_a_notice_that_cannot_be_delivered_causes_no_further_notice(redis, clock):
    refusing = Sink(reply_for_rcpt=lambda peer, rcpt: "550 5.1.1 no such user")
    async with (
        sink_on(refusing) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": route}) as e,
    ):
        await e.submit("bob@dest.test")
        attempts = await e.step()
        assert attempts == 2, "the message, then its notice; nothing about the notice"
        assert await e.queue.count() == 0


async def test_one_delay_notice_per_message_covers_every_domain(redis, clock, sender_sink):
    notice_sink, notice_route = sender_sink
    busy = Sink(reply_for_rcpt=lambda peer, rcpt: "452 4.2.2 mailbox full")
    async with (
        sink_on(busy) as route,
        engine(
            redis,
            clock,
            routes={"one.test": route, "two.test": route, "sender.test": notice_route},
        ) as e,
    ):
        await e.submit("a@one.test", "b@two.test")
        for _ in range(8):  # two hours
            await e.step(15 * MIN)
        assert await e.queue.count() == 1
    [notice] = notice_sink.messages
    rcpts = [b["final-recipient"] for b in report_fields(notice)[1:]]
    assert sorted(rcpts) == ["rfc822; a@one.test", "rfc822; b@two.test"]
    assert {b["action"] for b in report_fields(notice)[1:]} == {"delayed"}


async def test_dsn_parameters_are_honoured(redis, clock, sender_sink):
    notice_sink, notice_route = sender_sink

    def policy(peer: str, rcpt: str) -> str | None:
        return "550 5.1.1 no such user" if rcpt.startswith("gone") else None

    dest = Sink(reply_for_rcpt=policy)
    dsn = DsnRequest(
        ret="FULL",
        envid="envelope-42",
        recipients=(
            ("gone@dest.test", RecipientDsn(frozenset({"FAILURE"}), "rfc822;Gone@Dest.test")),
            ("quiet@dest.test", RecipientDsn(frozenset())),  # NOTIFY=NEVER
            ("gone2@dest.test", RecipientDsn(frozenset())),
            ("ok@dest.test", RecipientDsn(frozenset({"SUCCESS"}))),
        ),
    )
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        await e.submit(
            "gone@dest.test", "quiet@dest.test", "gone2@dest.test", "ok@dest.test", dsn=dsn
        )
        await e.step()
    [notice] = notice_sink.messages
    per_message, *rcpts = report_fields(notice)
    assert per_message["original-envelope-id"] == "envelope-42"
    assert [(r["final-recipient"], r["action"]) for r in rcpts] == [
        ("rfc822; gone@dest.test", "failed"),
        ("rfc822; ok@dest.test", "relayed"),
    ]
    assert rcpts[0]["original-recipient"] == "rfc822; Gone@Dest.test"
    returned = next(
        p for p in parse(notice).iter_parts() if p.get_content_type() == "message/rfc822"
    )
    assert "Hello Bob." in returned.as_string(), "RET=FULL returns the whole message"


async def test_held_mail_is_not_attempted_nor_expired_and_resumes_on_release(
    redis, clock, sender_sink
):
    notice_sink, notice_route = sender_sink
    busy = True
    dest = Sink(reply_for_rcpt=lambda peer, rcpt: "451 4.3.0 later" if busy else None)
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        queue_id = await e.submit("bob@dest.test")
        assert await e.queue.hold(queue_id)
        assert not await e.queue.hold(queue_id), "already held"
        assert await e.step() == 0
        assert await e.step(10 * DAY) == 0, "held: not attempted, not expired"
        [job] = await e.queue.jobs_of(queue_id)
        assert job.held and job.attempts == 0
        assert await e.queue.release(queue_id)
        assert await e.step() == 1, "released: attempted at once"
        for _ in range(3):
            await e.step(15 * MIN)
        assert notice_sink.count == 0, "the held days do not count towards the delay notice"
        meta = (await e.queue.load(queue_id)).meta
        assert meta.held_for == 10 * DAY and meta.held_at is None
        busy = False
        await e.step(15 * MIN)
        assert await e.queue.count() == 0
    assert dest.count == 1 and notice_sink.count == 0


async def test_holding_an_account_holds_its_queued_and_later_mail(redis, clock, sender_sink):
    _, notice_route = sender_sink
    dest = Sink()
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        first = await e.submit("a@dest.test", account="mallory")
        other = await e.submit("b@dest.test", account="alice")
        assert await e.queue.hold_account("mallory") == 1
        later = await e.submit("c@dest.test", account="mallory")
        assert await e.step() == 1, "only alice's message goes"
        assert [m.rcpt_tos for m in dest.messages] == [("b@dest.test",)]
        assert (await e.queue.load(later)).meta.held_at is not None, "held when claimed"
        with pytest.raises(Exception, match="release the account"):
            await e.queue.release(first)
        assert await e.queue.release_account("mallory") == 2
        assert await e.step() == 2
        assert await e.queue.count() == 0
    assert sorted(m.rcpt_tos[0] for m in dest.messages) == [
        "a@dest.test",
        "b@dest.test",
        "c@dest.test",
    ]
    assert other


async def test_retry_now_and_delete(redis, clock, sender_sink):
    notice_sink, notice_route = sender_sink
    busy = True
    dest = Sink(reply_for_rcpt=lambda peer, rcpt: "451 4.3.0 later" if busy else None)
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        keep = await e.submit("a@dest.test")
        drop = await e.submit("b@dest.test", account="bob")
        assert await e.step() == 2
        busy = False
        assert await e.step(60) == 0, "not due before the interval"
        assert await e.queue.retry(keep) == 1
        assert await e.queue.delete_account("bob") == 1
        assert await e.step() == 1
        assert await e.queue.count() == 0
        with pytest.raises(Exception, match="no message"):
            await e.queue.delete(drop)
    assert [m.rcpt_tos for m in dest.messages] == [("a@dest.test",)]
    assert notice_sink.count == 0, "deleting is silent"


async def test_several_messages_share_one_session(redis, clock):
    connections: list[str] = []
    dest = Sink(reply_for_connect=lambda peer: connections.append(peer))
    async with (
        sink_on(dest) as route,
        engine(
            redis, clock, routes={"dest.test": route}, egress=[{"ip": "127.0.0.2", "helo": "o"}]
        ) as e,
    ):
        for n in range(5):
            await e.submit(f"r{n}@dest.test")
            await e.step()
        assert e.worker.sessions.reused == 4
    assert dest.count == 5 and connections == ["127.0.0.2"]


async def test_concurrency_per_destination_is_bounded(redis, clock):
    active = peak = 0

    async def slow(peer: str, rcpt: str) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)  # a slow server, so that sessions overlap
        active -= 1

    dest = Sink(reply_for_rcpt=slow)
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route}, max_connections_per_destination=2) as e,
    ):
        for n in range(8):
            await e.submit(f"r{n}@dest.test")
        assert await e.step() == 8
    assert dest.count == 8 and peak == 2


async def test_a_job_whose_worker_died_is_delivered_after_its_lease(redis, clock):
    dest = Sink()
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route}, lease="15m") as e,
    ):
        await e.submit("bob@dest.test")
        [lost] = await e.queue.claim(10, lease=e.settings.lease.seconds)  # then the worker dies
        assert await e.step() == 0, "leased to the dead worker"
        assert await e.step(15 * MIN) == 1
        assert await e.queue.complete(lost) is LEASE_LOST, "the dead worker's lease is refused"
    assert [m.rcpt_tos for m in dest.messages] == [("bob@dest.test",)]


async def test_outcomes_failovers_and_notices_are_logged(redis, clock, sender_sink):
    _, notice_route = sender_sink

    def policy(peer: str, rcpt: str) -> str | None:
        return "550 5.1.1 no such user" if rcpt.startswith("gone") else None

    dest = Sink(
        reply_for_connect=lambda ip: "421 4.7.0 blocked" if ip == "127.0.0.2" else None,
        reply_for_rcpt=policy,
    )
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        queue_id = await e.submit("ok@dest.test", "gone@dest.test")
        with structlog.testing.capture_logs() as logs:
            await e.step()
    events = {e["event"]: e for e in logs if e.get("message_id", queue_id) == queue_id}
    assert events["delivery.failover"]["egress_ip"] == "127.0.0.2"
    assert events["delivery.failover"]["problem"] == "block"
    assert events["egress.cooling"]["domain"] == "dest.test"
    delivered, bounced = events["delivery.delivered"], events["delivery.bounced"]
    assert delivered["message_id"] == queue_id and delivered["egress_ip"] == "127.0.0.3"
    assert delivered["account"] == "alice" and delivered["mx"] == "127.0.0.1"
    assert delivered["tls"] is False and delivered["reply"].startswith("250 2.0.0")
    assert bounced["recipient"] == "gone@dest.test" and bounced["reply"].startswith("550 5.1.1")
    notice = events["notice.queued"]
    assert (notice["kind"], notice["message_id"], notice["to"]) == ("failure", queue_id, SENDER)


async def test_deliveries_asking_at_once_share_one_read_of_the_egress_state(redis, clock):
    """Many workers deliver to one domain at once: they share the read in flight (4 HGETALLs
    in one round trip), and a change made after it is seen by the next one."""

    async def hgetalls() -> int:
        return await command_calls(redis, "hgetall")

    async with engine(redis, clock) as eng:
        before = await hgetalls()
        statuses = await asyncio.gather(*(eng.worker._status("example.com") for _ in range(10)))
        assert await hgetalls() - before == 4, "one snapshot for ten deliveries"
        assert all(s == statuses[0] for s in statuses) and not statuses[0].disabled
        await eng.egress.disable("127.0.0.2", "operator")
        assert "127.0.0.2" in (await eng.worker._status("example.com")).disabled
