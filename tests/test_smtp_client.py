"""The delivery client against real sinks on 127.0.0.x, sending from real source addresses."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from quota import Duration
from relay.config import DeliveryTimeouts, Egress
from relay.delivery.mx import Hop
from relay.delivery.outcome import Disposition, RecipientOutcome, is_block_like
from relay.delivery.sessions import SessionPool
from relay.delivery.smtp_client import AttemptReport, attempt_domain
from relay.sink import Sink
from tests.conftest import free_port

BODY = (
    b"From: a@sender.test\r\nTo: b@dest.test\r\nSubject: hello\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b".a line starting with a dot\r\n"
    b"..two dots\r\n"
    b"Gr\xc3\xbc\xc3\x9fe, 8-bit\r\n"
    b"\r\n"
    b"last line\r\n"
)
EGRESS = Egress(ip="127.0.0.2", helo="out2.relay.test")
FAST = DeliveryTimeouts(connect=Duration(5), command=Duration(5), data=Duration(5))


@contextlib.asynccontextmanager
async def running(sink: Sink, host: str = "127.0.0.1") -> AsyncIterator[int]:
    async with sink.serving(host, 0) as server:
        yield int(server.sockets[0].getsockname()[1])


def hop(port: int, host: str = "mx.dest.test", address: str = "127.0.0.1") -> Hop:
    return Hop(host, port, 10, (address,))


async def send(
    hops: list[Hop],
    recipients: list[str],
    *,
    egress: Egress | None = EGRESS,
    mail_from: str = "a@sender.test",
    timeouts: DeliveryTimeouts = FAST,
    helo: str | None = None,
) -> list[RecipientOutcome]:
    report = await attempt_domain(
        hops=hops,
        egress=egress,
        mail_from=mail_from,
        recipients=recipients,
        body=BODY,
        timeouts=timeouts,
        helo=helo,
    )
    return report.outcomes


async def never(*_: str) -> str | None:
    await asyncio.Event().wait()
    return None


@pytest.fixture(scope="module")
def sink_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.dest.test").configure_cert(context)
    return context


async def test_message_arrives_intact_from_the_egress_address_and_helo() -> None:
    sink = Sink()
    async with running(sink) as port:
        outcomes = await send([hop(port)], ["b@dest.test", "c@dest.test"])
        [received] = await sink.wait_for(1)
    assert received.data == BODY
    assert (received.peer, received.helo) == ("127.0.0.2", "out2.relay.test")
    assert received.mail_from == "a@sender.test"
    assert received.rcpt_tos == ("b@dest.test", "c@dest.test")
    assert not received.tls
    for outcome, recipient in zip(outcomes, ["b@dest.test", "c@dest.test"], strict=True):
        assert outcome.recipient == recipient
        assert outcome.disposition is Disposition.DELIVERED
        assert (outcome.code, outcome.status) == (250, "2.0.0")
        assert outcome.text.startswith("OK queued as")
        assert (outcome.remote, outcome.egress_ip, outcome.tls) == (
            "mx.dest.test",
            "127.0.0.2",
            False,
        )


@pytest.mark.parametrize("null_sender", ["", "<>"])
async def test_null_sender_is_sent_as_empty_reverse_path(null_sender: str) -> None:
    sink = Sink()
    async with running(sink) as port:
        [outcome] = await send([hop(port)], ["b@dest.test"], mail_from=null_sender)
        [received] = await sink.wait_for(1)
    assert outcome.disposition is Disposition.DELIVERED
    assert received.mail_from == ""


async def test_each_recipient_gets_its_own_reply() -> None:
    replies = {"later@dest.test": "451 4.7.1 try later", "gone@dest.test": "550 5.1.1 no such user"}
    sink = Sink(reply_for_rcpt=lambda ip, rcpt: replies.get(rcpt))
    recipients = ["ok@dest.test", "later@dest.test", "gone@dest.test", "ok2@dest.test"]
    async with running(sink) as port:
        outcomes = await send([hop(port)], recipients)
        [received] = await sink.wait_for(1)
    assert received.rcpt_tos == ("ok@dest.test", "ok2@dest.test")
    assert [(o.recipient, o.disposition, o.code, o.status, o.text) for o in outcomes] == [
        ("ok@dest.test", Disposition.DELIVERED, 250, "2.0.0", outcomes[0].text),
        ("later@dest.test", Disposition.TRANSIENT, 451, "4.7.1", "try later"),
        ("gone@dest.test", Disposition.PERMANENT, 550, "5.1.1", "no such user"),
        ("ok2@dest.test", Disposition.DELIVERED, 250, "2.0.0", outcomes[0].text),
    ]


async def test_no_data_when_every_recipient_is_refused() -> None:
    sink = Sink(reply_for_rcpt=lambda ip, rcpt: "550 5.1.1 no such user")
    async with running(sink) as port:
        outcomes = await send([hop(port)], ["x@dest.test", "y@dest.test"])
    assert [o.disposition for o in outcomes] == [Disposition.PERMANENT] * 2
    assert sink.count == 0


async def test_421_at_rcpt_defers_every_recipient_of_the_session() -> None:
    sink = Sink(
        reply_for_rcpt=lambda ip, rcpt: "421 4.7.0 too fast" if rcpt.startswith("b") else None
    )
    async with running(sink) as port:
        outcomes = await send([hop(port)], ["a@dest.test", "b@dest.test", "c@dest.test"])
    assert [(o.disposition, o.code) for o in outcomes] == [(Disposition.TRANSIENT, 421)] * 3
    assert sink.count == 0


async def test_closed_port_moves_on_to_the_next_hop() -> None:
    sink = Sink()
    async with running(sink) as port:
        hops = [hop(free_port(), host="mx1.dest.test"), hop(port, host="mx2.dest.test")]
        [outcome] = await send(hops, ["b@dest.test"])
        await sink.wait_for(1)
    assert outcome.disposition is Disposition.DELIVERED
    assert outcome.remote == "mx2.dest.test"


async def test_unreachable_address_moves_on_to_the_next_address_of_the_hop() -> None:
    sink = Sink()
    async with running(sink, "127.0.0.3") as port:
        multi = Hop("mx.dest.test", port, 10, ("127.0.0.1", "127.0.0.3"))
        [outcome] = await send([multi], ["b@dest.test"])
        [received] = await sink.wait_for(1)
    assert outcome.disposition is Disposition.DELIVERED
    assert received.peer == "127.0.0.2"


@pytest.mark.parametrize("greeting", ["421 4.3.2 busy", "554 5.7.1 your IP is blocked"])
async def test_refused_greeting_moves_on_to_the_next_hop(greeting: str) -> None:
    refusing, accepting = Sink(reply_for_connect=lambda ip: greeting), Sink()
    async with running(refusing) as bad, running(accepting, "127.0.0.3") as good:
        hops = [hop(bad, "mx1.dest.test"), hop(good, "mx2.dest.test", "127.0.0.3")]
        [outcome] = await send(hops, ["b@dest.test"])
        await accepting.wait_for(1)
    assert (outcome.disposition, outcome.remote) == (Disposition.DELIVERED, "mx2.dest.test")


async def test_block_of_the_egress_ip_on_every_hop_defers_with_the_servers_reply() -> None:
    def block(ip: str) -> str | None:
        return (
            "554 5.7.1 Service unavailable; client [127.0.0.2] blocked"
            if ip == "127.0.0.2"
            else None
        )

    sink = Sink(reply_for_connect=block)
    async with running(sink) as port:
        hops = [hop(free_port(), "mx1.dest.test"), hop(port, "mx2.dest.test")]
        [blocked] = await send(hops, ["b@dest.test"])
        [other] = await send(hops, ["b@dest.test"], egress=Egress(ip="127.0.0.4", helo="out4"))
    assert blocked.disposition is Disposition.TRANSIENT
    assert (blocked.code, blocked.status, blocked.remote) == (554, "5.7.1", "mx2.dest.test")
    assert is_block_like(blocked.code, f"{blocked.status} {blocked.text}")
    assert other.disposition is Disposition.DELIVERED
    assert [m.peer for m in sink.messages] == ["127.0.0.4"]


async def test_starttls_is_used_when_offered(sink_tls: ssl.SSLContext) -> None:
    sink = Sink(tls_context=sink_tls)
    async with running(sink) as port:
        [outcome] = await send([hop(port)], ["b@dest.test"])
        [received] = await sink.wait_for(1)
    assert outcome.tls and received.tls
    assert received.data == BODY
    assert received.helo == "out2.relay.test"


async def test_failed_tls_handshake_falls_back_to_plain_text(
    sink_tls: ssl.SSLContext, ca: trustme.CA
) -> None:
    demanding = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.dest.test").configure_cert(demanding)
    demanding.verify_mode = ssl.CERT_REQUIRED  # we present no client certificate
    sink = Sink(tls_context=demanding)
    async with running(sink) as port:
        [outcome] = await send([hop(port)], ["b@dest.test"])
        [received] = await sink.wait_for(1)
    assert outcome.disposition is Disposition.DELIVERED
    assert not outcome.tls and not received.tls


async def test_server_that_never_greets_times_out_as_transient() -> None:
    sink = Sink(reply_for_connect=never)
    quick = DeliveryTimeouts(connect=Duration(0.2), command=Duration(5), data=Duration(5))
    async with running(sink) as port:
        outcomes = await send([hop(port)], ["a@dest.test", "b@dest.test"], timeouts=quick)
    assert [(o.disposition, o.code, o.status) for o in outcomes] == [
        (Disposition.TRANSIENT, 451, "4.4.1")
    ] * 2
    assert outcomes[0].remote == "mx.dest.test"


async def test_command_timeout_in_the_transaction_is_transient() -> None:
    sink = Sink(reply_for_rcpt=never)
    quick = DeliveryTimeouts(connect=Duration(5), command=Duration(0.2), data=Duration(5))
    async with running(sink) as port:
        outcomes = await send([hop(port)], ["a@dest.test", "b@dest.test"], timeouts=quick)
    assert [(o.disposition, o.status) for o in outcomes] == [(Disposition.TRANSIENT, "4.4.2")] * 2
    assert sink.count == 0


async def test_every_hop_unreachable_defers_every_recipient() -> None:
    outcomes = await send([hop(free_port()), hop(free_port())], ["a@dest.test", "b@dest.test"])
    assert [(o.disposition, o.status) for o in outcomes] == [(Disposition.TRANSIENT, "4.4.1")] * 2
    assert all(o.egress_ip == "127.0.0.2" and not o.tls for o in outcomes)


async def test_no_hops_defers() -> None:
    [outcome] = await send([], ["a@dest.test"])
    assert (outcome.disposition, outcome.status, outcome.remote) == (
        Disposition.TRANSIENT,
        "4.4.4",
        None,
    )


async def test_only_addresses_of_the_egress_family_are_tried() -> None:
    [outcome] = await send([Hop("mx6.dest.test", 25, 10, ("::1",))], ["a@dest.test"])
    assert (outcome.disposition, outcome.status) == (Disposition.TRANSIENT, "4.4.4")


async def test_malformed_recipient_bounces_without_hurting_the_others() -> None:
    sink = Sink()
    async with running(sink) as port:
        outcomes = await send([hop(port)], ["bad <x>@dest.test", "", "local", "b@dest.test"])
        [received] = await sink.wait_for(1)
    assert [(o.disposition, o.status) for o in outcomes] == [
        (Disposition.PERMANENT, "5.1.3"),
        (Disposition.PERMANENT, "5.1.3"),
        (Disposition.PERMANENT, "5.1.3"),
        (Disposition.DELIVERED, "2.0.0"),
    ]
    assert received.rcpt_tos == ("b@dest.test",)


async def test_malformed_sender_bounces_everything_without_a_connection() -> None:
    outcomes = await send([hop(free_port())], ["a@dest.test", "b@dest.test"], mail_from="Me <a@x>")
    assert [(o.disposition, o.status, o.remote) for o in outcomes] == [
        (Disposition.PERMANENT, "5.1.7", None)
    ] * 2


async def test_utf8_addresses_use_smtputf8() -> None:
    sink = Sink()
    async with running(sink) as port:
        [outcome] = await send([hop(port)], ["jörg@dest.test"], mail_from="zoë@sender.test")
        [received] = await sink.wait_for(1)
    assert outcome.disposition is Disposition.DELIVERED
    assert (received.mail_from, received.rcpt_tos) == ("zoë@sender.test", ("jörg@dest.test",))


async def test_utf8_addresses_bounce_where_smtputf8_is_not_offered() -> None:
    sink = Sink(smtputf8=False)
    async with running(sink) as port:
        outcomes = await send([hop(port)], ["jörg@dest.test", "b@dest.test"])
        [received] = await sink.wait_for(1)
        [sender_utf8] = await send([hop(port)], ["b@dest.test"], mail_from="zoë@sender.test")
    assert [(o.disposition, o.status) for o in outcomes] == [
        (Disposition.PERMANENT, "5.6.7"),
        (Disposition.DELIVERED, "2.0.0"),
    ]
    assert received.rcpt_tos == ("b@dest.test",)
    assert (sender_utf8.disposition, sender_utf8.status) == (Disposition.PERMANENT, "5.6.7")
    assert sink.count == 1


async def test_static_route_by_name_without_egress_uses_the_given_helo() -> None:
    sink = Sink()
    async with running(sink) as port:
        [outcome] = await send(
            [Hop("localhost", port, 0)], ["b@dest.test"], egress=None, helo="relay.test"
        )
        [received] = await sink.wait_for(1)
    assert (outcome.disposition, outcome.remote, outcome.egress_ip) == (
        Disposition.DELIVERED,
        "localhost",
        None,
    )
    assert received.helo == "relay.test"


# --- what the report says of the egress IP, for failover ---


async def attempt(hops: list[Hop], **kwargs) -> AttemptReport:
    return await attempt_domain(
        hops=hops,
        egress=kwargs.pop("egress", EGRESS),
        mail_from="a@sender.test",
        recipients=kwargs.pop("recipients", ["b@dest.test"]),
        body=BODY,
        timeouts=kwargs.pop("timeouts", FAST),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("greeting", "problem"),
    [
        ("554 5.7.1 client host blocked using zen", "block"),
        ("421 4.7.0 too many connections from your IP", "block"),
        ("554 5.3.0 no SMTP service here", None),
    ],
)
async def test_report_blames_the_ip_for_a_block_only(greeting: str, problem: str | None) -> None:
    sink = Sink(reply_for_connect=lambda ip: greeting)
    async with running(sink) as port:
        report = await attempt([hop(port)])
    assert report.ip_problem == problem and not report.connected
    assert report.outcomes[0].disposition is Disposition.TRANSIENT


async def test_report_says_unreachable_when_nothing_answers() -> None:
    report = await attempt([hop(free_port()), hop(free_port())])
    assert (report.ip_problem, report.connected) == ("unreachable", False)


async def test_report_of_a_transaction_has_no_ip_problem() -> None:
    sink = Sink(reply_for_rcpt=lambda ip, rcpt: "550 5.7.1 blocked for policy reasons")
    async with running(sink) as port:
        report = await attempt([hop(port)])
    assert (report.ip_problem, report.connected) == (None, True)
    assert report.outcomes[0].disposition is Disposition.PERMANENT


# --- sessions kept for the next message ---


async def test_a_kept_session_carries_the_next_message() -> None:
    connections: list[str] = []
    refuse_once = iter(["550 5.1.1 no such user"])
    sink = Sink(
        reply_for_connect=lambda ip: connections.append(ip),
        reply_for_rcpt=lambda ip, rcpt: next(refuse_once, None),
    )
    pool = SessionPool(idle=30, max_messages=3)
    async with running(sink) as port:
        first = await attempt([hop(port)], sessions=pool)  # all refused: RSET, then kept
        assert pool.idle_count() == 1
        second = await attempt([hop(port)], sessions=pool)
        third = await attempt([hop(port)], sessions=pool)
        assert pool.idle_count() == 0, "closed after max_messages"
        fourth = await attempt([hop(port)], sessions=pool)
        await pool.close()
    assert first.outcomes[0].disposition is Disposition.PERMANENT
    for report in (second, third, fourth):
        assert report.outcomes[0].disposition is Disposition.DELIVERED
    assert sink.count == 3 and len(connections) == 2 and pool.reused == 2


async def test_a_session_the_server_closed_is_replaced_by_a_new_one() -> None:
    sink = Sink()
    pool = SessionPool(idle=30, max_messages=100)
    async with running(sink) as port:
        await attempt([hop(port)], sessions=pool)
        sink.close_connections()
        await asyncio.sleep(0)  # let the client see the close, or not: both must work
        report = await attempt([hop(port)], sessions=pool)
        await pool.close()
    assert report.outcomes[0].disposition is Disposition.DELIVERED and sink.count == 2


async def test_sessions_are_kept_per_egress_ip() -> None:
    sink = Sink()
    pool = SessionPool(idle=30, max_messages=100)
    other = Egress(ip="127.0.0.3", helo="out3.relay.test")
    async with running(sink) as port:
        await attempt([hop(port)], sessions=pool)
        await attempt([hop(port)], sessions=pool, egress=other)
        await attempt([hop(port)], sessions=pool, egress=other)
        await pool.close()
    assert [m.peer for m in sink.messages] == ["127.0.0.2", "127.0.0.3", "127.0.0.3"]
    assert pool.reused == 1
