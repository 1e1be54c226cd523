"""DSN parameters on submission (RFC 3461): pure parsing, then over a real TLS session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relay.queue import DsnRequest, RecipientDsn
from relay.submission.dsn_params import (
    MAIL_PARAMS,
    RCPT_PARAMS,
    DsnSyntaxError,
    parse_mail,
    parse_rcpt,
    split_params,
    xtext_decode,
)
from tests.conftest import PASSWORD, add_sender
from tests.support.submission import Stack, client, start_stack


def test_split_keeps_case_and_other_parameters() -> None:
    ours, others = split_params("SIZE=100 ret=hdrs EnvId=Ab+2Bc BODY=8BITMIME", MAIL_PARAMS)
    assert ours == {"RET": "hdrs", "ENVID": "Ab+2Bc"}
    assert others == ["SIZE=100", "BODY=8BITMIME"]
    assert split_params("", RCPT_PARAMS) == ({}, [])


@pytest.mark.parametrize("params", ["RET", "RET=", "RET=FULL RET=HDRS"])
def test_split_refuses_empty_and_repeated_parameters(params: str) -> None:
    with pytest.raises(DsnSyntaxError) as caught:
        split_params(params, MAIL_PARAMS)
    assert caught.value.reply.startswith("501 5.5.4 RET ")


@pytest.mark.parametrize(
    ("text", "decoded"),
    [("abc", "abc"), ("a+2Bb", "a+b"), ("a+3Db", "a=b"), ("+20x", " x"), ("", "")],
)
def test_xtext(text: str, decoded: str) -> None:
    assert xtext_decode(text) == decoded


@pytest.mark.parametrize("text", ["a+b", "a=b", "+2b", "+G0", "a b", "é"])
def test_bad_xtext(text: str) -> None:
    with pytest.raises(DsnSyntaxError):
        xtext_decode(text)


def test_mail_parameters() -> None:
    assert parse_mail({}) == (None, None)
    assert parse_mail({"RET": "full", "ENVID": "QQ+2B1"}) == ("FULL", "QQ+1")
    assert parse_mail({"RET": "HDRS"}) == ("HDRS", None)
    for bad in ({"RET": "ALL"}, {"ENVID": "x" * 101}, {"ENVID": "a+0Ab"}):
        with pytest.raises(DsnSyntaxError):
            parse_mail(bad)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, RecipientDsn()),
        ({"NOTIFY": "never"}, RecipientDsn(frozenset())),
        ({"NOTIFY": "SUCCESS,delay"}, RecipientDsn(frozenset({"SUCCESS", "DELAY"}))),
        ({"ORCPT": "rfc822;Bob+2Bx@Example.com"}, RecipientDsn(None, "rfc822;Bob+x@Example.com")),
        ({"ORCPT": "UTF-8;jörg@example.com"}, RecipientDsn(None, "utf-8;jörg@example.com")),
    ],
)
def test_rcpt_parameters(params: dict[str, str], expected: RecipientDsn) -> None:
    assert parse_rcpt(params) == expected


@pytest.mark.parametrize(
    "params",
    [
        {"NOTIFY": "NEVER,FAILURE"},
        {"NOTIFY": "SOMETIMES"},
        {"NOTIFY": "DELAY,DELAY"},
        {"ORCPT": "bob@example.com"},
        {"ORCPT": "rfc 822;bob@example.com"},
        {"ORCPT": "rfc822;"},
        {"ORCPT": "rfc822;" + "x" * 500},
    ],
)
def test_bad_rcpt_parameters(params: dict[str, str]) -> None:
    with pytest.raises(DsnSyntaxError):
        parse_rcpt(params)


# --- over a real session ---


@pytest.fixture
async def stack(redis, clock, server_cert, ca) -> AsyncIterator[Stack]:
    await add_sender(redis)
    stack, servers = await start_stack(redis, clock, server_cert, ca)
    yield stack
    for server in servers:
        server.close()
        await server.wait_closed()


MESSAGE = b"Subject: dsn\r\n\r\nbody\r\n"


async def test_dsn_is_advertised_and_parameters_reach_the_queue(stack: Stack) -> None:
    async with client(stack) as smtp:
        await smtp.ehlo()
        assert "dsn" in smtp.esmtp_extensions
        await smtp.login("alice", PASSWORD)
        reply = await smtp.mail(
            "alice@example.org", options=["RET=HDRS", "ENVID=Id+2B42", "SIZE=22"]
        )
        assert reply.code == 250
        for rcpt, options in [
            ("bob@example.com", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob@Example.com"]),
            ("carol@example.com", ["NOTIFY=NEVER"]),
            ("dave@example.com", []),
        ]:
            assert (await smtp.rcpt(rcpt, options=options)).code == 250
        reply = await smtp.data(MESSAGE)
    queue_id = reply.message.split()[-1]
    stored = await stack.queue.load(queue_id)
    assert stored.meta.dsn == DsnRequest(
        ret="HDRS",
        envid="Id+42",
        recipients=(
            (
                "bob@example.com",
                RecipientDsn(frozenset({"SUCCESS", "FAILURE"}), "rfc822;Bob@Example.com"),
            ),
            ("carol@example.com", RecipientDsn(frozenset())),
        ),
    )


async def test_mail_without_dsn_parameters_stores_none(stack: Stack) -> None:
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        _, reply = await smtp.sendmail("alice@example.org", ["bob@example.com"], MESSAGE)
    stored = await stack.queue.load(reply.split()[-1])
    assert stored.meta.dsn == DsnRequest()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"MAIL FROM:<a@example.org> RET=EVERYTHING", "501 5.5.4 RET must be FULL or HDRS"),
        (b"MAIL FROM:<a@example.org> RET=FULL RET=FULL", "501 5.5.4 RET given twice"),
        (b"MAIL FROM:<a@example.org> FOO=1", "555 5.5.4"),
    ],
)
async def test_bad_mail_parameters_get_a_clear_reply(stack: Stack, command, expected) -> None:
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        verb, _, rest = command.partition(b" ")
        reply = await smtp.execute_command(verb, rest)
        assert f"{reply.code} {reply.message}".startswith(expected)
        assert (await smtp.mail("a@example.org")).code == 250, "the session goes on"


async def test_bad_rcpt_parameter_refuses_that_recipient_only(stack: Stack) -> None:
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        await smtp.mail("alice@example.org")
        reply = await smtp.execute_command(b"RCPT", b"TO:<bob@example.com> NOTIFY=MAYBE")
        assert reply.code == 501 and reply.message.startswith("5.5.4 NOTIFY must be")
        assert (await smtp.rcpt("carol@example.com", options=["NOTIFY=DELAY"])).code == 250
        reply = await smtp.data(MESSAGE)
    stored = await stack.queue.load(reply.message.split()[-1])
    assert stored.meta.recipients == ("carol@example.com",)
    assert stored.meta.dsn.of("carol@example.com").notify == frozenset({"DELAY"})


async def test_dsn_parameters_do_not_skip_the_auth_check(stack: Stack) -> None:
    async with client(stack) as smtp:
        await smtp.ehlo()
        reply = await smtp.execute_command(b"MAIL", b"FROM:<a@example.org> RET=BOGUS")
        assert reply.code == 530


async def test_a_refused_recipient_leaves_no_parameters_behind(stack: Stack) -> None:
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        await smtp.mail("alice@example.org")
        reply = await smtp.execute_command(b"RCPT", b"TO:<not an address> NOTIFY=NEVER")
        assert reply.code >= 500
        await smtp.rcpt("bob@example.com")
        reply = await smtp.data(MESSAGE)
    stored = await stack.queue.load(reply.message.split()[-1])
    assert stored.meta.dsn == DsnRequest()
