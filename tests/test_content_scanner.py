"""The scanner against real clamd/rspamd that die, stall or refuse: the configured behaviour
(`on_error`), logged and counted."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from relay.clock import FakeClock
from relay.content.clamd import ClamdAddress, ClamdClient
from relay.content.quarantine import Held, QuarantineStore
from relay.content.rspamd import RspamdClient
from relay.content.scanner import ContentScanner, MalwarePolicy
from relay.content.stats import ContentStats
from relay.content.verdict import OnError, ScanPolicy
from relay.submission.service import Submitted
from tests.conftest import free_port
from tests.support.scanners import EICAR, Clamd
from tests.support.spool import temp_spool

BODY = (
    b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hello\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <u1@example.org>\r\n\r\nHi Bob.\r\n"
)


@pytest.fixture
async def own_clamd(tmp_path: Path) -> AsyncIterator[Clamd]:
    """A clamd of this test alone (it gets killed)."""
    server = Clamd(tmp_path)
    await asyncio.to_thread(server.start)
    yield server
    server.stop()


async def spooled_message(spool, body: bytes = BODY) -> Submitted:
    stored = await spool.write(secrets.token_hex(8), body)
    return Submitted(
        account="alice",
        mail_from="alice@example.org",
        recipients=("bob@example.com",),
        body=stored,
        peer_ip="192.0.2.10",
        helo="client.example.org",
    )


def scanner(redis, spool, *, clamd=None, rspamd=None, deadline=5.0, **policy) -> ContentScanner:
    clock = FakeClock()
    return ContentScanner(
        clamd=clamd,
        rspamd=rspamd,
        clamd_deadline=deadline,
        rspamd_deadline=deadline,
        policy=ScanPolicy(quarantine_at=5.0, reject_at=15.0, **policy),
        malware=MalwarePolicy(suspend_after=0),
        quarantine=QuarantineStore(
            redis, spool, clock, "node-a", {Held.MALWARE: 365 * 86400, Held.SPAM: 30 * 86400}
        ),
        stats=ContentStats(redis),
        clock=clock,
    )


async def test_clamd_killed_tempfails_by_default_and_fails_open_when_configured(redis, own_clamd):
    spool = temp_spool()
    clamd = ClamdClient(ClamdAddress.parse(own_clamd.unix_address))
    default = scanner(redis, spool, clamd=clamd)
    assert await default(await spooled_message(spool), b"") is None, "clean mail passes"
    assert await default(await spooled_message(spool, EICAR), b"") is not None
    own_clamd.stop()
    message = await spooled_message(spool)
    with capture_logs() as logs:
        assert await default(message, b"") == "451 4.7.0 Content scan unavailable; try again later"
    (failed,) = [e for e in logs if e["event"] == "content.scanner_failed"]
    assert failed["scanner"] == "clamd" and failed["then"] == "tempfail"
    assert "cannot connect" in failed["error"]
    assert spool.exists(message.body.id), "the body is left for acceptance to remove"

    fail_open = scanner(redis, spool, clamd=clamd, malware_on_error=OnError.FAIL_OPEN)
    assert await fail_open(await spooled_message(spool), b"") is None
    counts = await ContentStats(redis).counts()
    assert counts["scanner_failures"] == {"clamd": {"error": 2}}


async def test_clamd_over_its_deadline_counts_as_down(redis):
    """A clamd that accepts and never answers (a real socket): the deadline ends the wait."""
    path = Path(temp_spool().root.parent) / "stalled.sock"
    held: list[asyncio.StreamWriter] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    server = await asyncio.start_unix_server(stall, path=str(path))
    try:
        spool = temp_spool()
        slow = scanner(redis, spool, clamd=ClamdClient(ClamdAddress(path=str(path))), deadline=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await slow(await spooled_message(spool), b"")).startswith("451 4.7.0")
        assert loop.time() - started < 2.0
        assert (await ContentStats(redis).counts())["scanner_failures"] == {"clamd": {"timeout": 1}}
    finally:
        server.close()
        for writer in held:
            writer.close()


async def test_rspamd_down_fails_open_by_default_and_tempfails_when_configured(redis):
    spool = temp_spool()
    nobody = RspamdClient(f"http://127.0.0.1:{free_port()}")
    try:
        assert await scanner(redis, spool, rspamd=nobody)(await spooled_message(spool), b"") is None
        strict = scanner(redis, spool, rspamd=nobody, spam_on_error=OnError.TEMPFAIL)
        assert (await strict(await spooled_message(spool), b"")).startswith("451 4.7.0")
    finally:
        await nobody.aclose()
    assert (await ContentStats(redis).counts())["scanner_failures"] == {"rspamd": {"error": 2}}


async def test_clamd_over_tcp_finds_eicar(redis, clamd_server):
    spool = temp_spool()
    tcp = scanner(redis, spool, clamd=ClamdClient(ClamdAddress.parse(clamd_server.tcp_address)))
    reply = await tcp(await spooled_message(spool, EICAR), b"")
    assert reply is not None and reply.startswith("554 5.7.1 Refused: malware found (Test.EICAR")
