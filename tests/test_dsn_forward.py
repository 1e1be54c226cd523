"""DSN parameters go on to a next hop that offers DSN (RFC 3461 section 5.2); success is
then the destination's to report, and the relay sends no "relayed" notice of its own."""

from __future__ import annotations

import pytest

from relay.delivery.dsn_forward import mail_options, rcpt_options, xtext_encode
from relay.queue import DsnRequest, RecipientDsn
from relay.sink import Sink
from tests.support.engine import engine, report_fields, sink_on

ASKED = DsnRequest(
    ret="HDRS",
    envid="env=1 +x",
    recipients=(
        (
            "bob@dest.test",
            RecipientDsn(frozenset({"SUCCESS", "FAILURE"}), "rfc822;Bob+1@orig.test"),
        ),
        ("carol@dest.test", RecipientDsn(frozenset(), None)),
    ),
)


@pytest.mark.parametrize(
    ("text", "encoded"),
    [("abc", "abc"), ("a+b", "a+2Bb"), ("a=b c", "a+3Db+20c"), ("é", "+C3+A9"), ("", "")],
)
def test_xtext_encode(text: str, encoded: str) -> None:
    assert xtext_encode(text) == encoded


def test_options_say_what_the_sender_asked_and_nothing_else() -> None:
    assert mail_options(ASKED) == ["RET=HDRS", "ENVID=env+3D1+20+2Bx"]
    assert rcpt_options(ASKED, "bob@dest.test") == [
        "NOTIFY=FAILURE,SUCCESS",
        "ORCPT=rfc822;Bob+2B1@orig.test",
    ]
    assert rcpt_options(ASKED, "carol@dest.test") == ["NOTIFY=NEVER"]
    assert rcpt_options(ASKED, "dave@dest.test") == []
    assert mail_options(DsnRequest()) == []


@pytest.fixture
async def sender_sink():
    sink = Sink()
    async with sink_on(sink) as address:
        yield sink, address


async def test_parameters_reach_a_dsn_next_hop_and_success_is_left_to_it(
    redis, clock, sender_sink
) -> None:
    notices, notice_route = sender_sink
    dest = Sink(dsn=True)
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        await e.submit("bob@dest.test", "carol@dest.test", "dave@dest.test", dsn=ASKED)
        await e.step()
    [message] = dest.messages
    assert message.mail_params == ("RET=HDRS", "ENVID=env+3D1+20+2Bx")
    assert dict(message.rcpt_params) == {
        "bob@dest.test": ("NOTIFY=FAILURE,SUCCESS", "ORCPT=rfc822;Bob+2B1@orig.test"),
        "carol@dest.test": ("NOTIFY=NEVER",),
    }
    assert notices.count == 0  # the destination reports success, not the relay


async def test_a_next_hop_without_dsn_gets_none_and_the_relay_reports_relayed(
    redis, clock, sender_sink
) -> None:
    notices, notice_route = sender_sink
    dest = Sink(dsn=False)
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route, "sender.test": notice_route}) as e,
    ):
        await e.submit("bob@dest.test", dsn=ASKED)
        await e.step()
        await e.step()
    [message] = dest.messages
    assert message.mail_params == () and message.rcpt_params == ()
    [notice] = notices.messages
    assert [block["action"] for block in report_fields(notice)[1:]] == ["relayed"]
