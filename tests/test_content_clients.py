"""The clamd and rspamd clients against the real servers: what rspamd understands of the
headers the relay sends, its unix socket and settings id; clamd handed the spool file by
descriptor, and streamed to when it refuses descriptors."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from relay.config import RspamdSettings
from relay.content.clamd import ClamdAddress, ClamdClient
from relay.content.errors import ScannerUnavailable
from relay.content.message_file import MessageFile
from relay.content.rspamd import Envelope, RspamdClient
from tests.support.scanners import EICAR, ENVELOPE_SYMBOL, NO_TEST_RULES, REJECT_MARKER, Clamd

BODY = (
    b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: minutes\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <c1@example.org>\r\n\r\n"
    b"Hello Bob, here are the minutes.\r\n"
)
ENVELOPE = Envelope(
    ip="192.0.2.10",
    helo="client.example.org",
    mail_from="alice@example.org",
    recipients=("bob@example.com", "carol@example.net"),
    user="alice",
    queue_id="0123456789abcdef",
)


def message_file(folder: Path, content: bytes, name: str = "m.eml") -> MessageFile:
    path = folder / name
    path.write_bytes(content)
    return MessageFile(path, len(content))


async def test_rspamd_takes_the_envelope_and_the_login_from_the_headers(rspamd_server, tmp_path):
    """The request head the client builds, as the real rspamd reads it (a rule of the test
    rspamd echoes the envelope it sees): the login (rspamd then treats the mail as
    outbound), the client's address and HELO, the envelope sender, every recipient and our
    queue id, none of them guessed from the message's header fields."""
    client = RspamdClient(rspamd_server.url)
    head = client.request_head(len(BODY), ENVELOPE)
    reader, writer = await asyncio.open_connection("127.0.0.1", rspamd_server.port)
    try:
        writer.write(head + BODY)
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    answer = json.loads(raw.partition(b"\r\n\r\n")[2])
    seen = set(answer["symbols"][ENVELOPE_SYMBOL]["options"])
    assert seen == {
        "user=alice",
        "ip=192.0.2.10",
        "helo=client.example.org",
        "from=alice@example.org",
        "rcpt=bob@example.com",
        "rcpt=carol@example.net",
        "queue_id=0123456789abcdef",
    }
    assert "RCVD_COUNT_ZERO" in answer["symbols"], "an authenticated submission, not relayed"


async def test_rspamd_over_its_unix_socket_and_a_settings_id(rspamd_server, tmp_path):
    spam = message_file(tmp_path, BODY.replace(b"here are", REJECT_MARKER.encode()))
    plain = RspamdClient(rspamd_server.unix_url)
    assert (await plain.check(spam, ENVELOPE)).score >= 90, "the test rule fires"
    # The settings id names an entry of rspamd's settings (here: one without the test
    # rules); the same message then scores as clean mail.
    scoped = RspamdClient(rspamd_server.unix_url, settings_id=NO_TEST_RULES)
    check = await scoped.check(spam, ENVELOPE)
    assert check.score < 15 and "TEST_REJECT_MARKER" not in check.symbols
    down = RspamdClient(f"unix:{tmp_path / 'nobody.sock'}")
    with pytest.raises(ScannerUnavailable, match="cannot connect"):
        await down.check(spam, ENVELOPE)


def test_rspamd_settings():
    assert RspamdSettings(url="unix:/run/rspamd/normal.sock").url.startswith("unix:/")
    assert RspamdSettings(url="http://127.0.0.1:11333", settings_id="relay-outbound")
    for bad in (
        {"url": "unix:run/rspamd.sock"},
        {"url": "ftp://x"},
        {"url": "http://127.0.0.1:11333", "settings_id": "two words"},
    ):
        with pytest.raises(ValidationError):
            RspamdSettings(**bad)


@pytest.fixture
async def small_stream_clamd(tmp_path: Path) -> AsyncIterator[Clamd]:
    """A clamd that takes at most 1 MB over INSTREAM."""
    server = Clamd(tmp_path, stream_max="1M")
    await asyncio.to_thread(server.start)
    yield server
    server.stop()


async def test_clamd_is_handed_the_file_and_reads_past_its_stream_limit(
    small_stream_clamd, tmp_path
):
    """On its unix socket clamd gets the open spool file (FILDES), not a copy through the
    socket: what INSTREAM's StreamMaxLength refuses is scanned in place."""
    big = message_file(tmp_path, b"x" * 2_000_000 + b"\r\n" + EICAR + b"\r\n", "big.eml")
    address = ClamdAddress.parse(small_stream_clamd.unix_address)
    assert (await ClamdClient(address).scan(big)).startswith("Test.EICAR")
    with pytest.raises(ScannerUnavailable, match="size limit exceeded"):
        await ClamdClient(address, fdpass=False).scan(big)
    clean = message_file(tmp_path, BODY)
    assert await ClamdClient(address).scan(clean) is None
    tcp = ClamdClient(ClamdAddress.parse(small_stream_clamd.tcp_address))
    assert not tcp.fdpass, "descriptors go over unix sockets only"
    assert (await tcp.scan(message_file(tmp_path, EICAR, "eicar"))).startswith("Test.EICAR")


class NoDescriptors:
    """A clamd-speaking unix server that refuses FILDES (as a clamd whose AppArmor profile
    forbids the spool does) and answers INSTREAM with `instream_reply`."""

    def __init__(self, path: Path, instream_reply: bytes) -> None:
        self.path = path
        self.instream_reply = instream_reply
        self.commands: list[str] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> NoDescriptors:
        self.server = await asyncio.start_unix_server(self.serve, path=str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            command = (await reader.readuntil(b"\0")).decode().strip("z\0")
            self.commands.append(command)
            if command == "FILDES":
                await reader.readexactly(1)  # the byte that carried the descriptor
                writer.write(b"fd[-1]: No file descriptor received. ERROR\0")
            else:
                while size := struct.unpack("!I", await reader.readexactly(4))[0]:
                    await reader.readexactly(size)
                writer.write(self.instream_reply)
            await writer.drain()
        finally:
            writer.close()


async def test_clamd_refusing_descriptors_is_streamed_to_from_then_on(tmp_path):
    clean = message_file(tmp_path, BODY)
    async with NoDescriptors(tmp_path / "c.sock", b"stream: OK\0") as clamd:
        client = ClamdClient(ClamdAddress(path=str(clamd.path)))
        with capture_logs() as logs:
            assert await client.scan(clean) is None, "streamed instead, and clean"
        assert clamd.commands == ["FILDES", "INSTREAM"]
        assert [e["event"] for e in logs] == ["content.clamd_fdpass_refused"]
        assert await client.scan(clean) is None
        assert clamd.commands == ["FILDES", "INSTREAM", "INSTREAM"], "no second try"


async def test_clamd_failing_both_ways_stays_unavailable_and_keeps_descriptors(tmp_path):
    clean = message_file(tmp_path, BODY)
    async with NoDescriptors(tmp_path / "c.sock", b"Can't allocate memory ERROR\0") as clamd:
        client = ClamdClient(ClamdAddress(path=str(clamd.path)))
        with pytest.raises(ScannerUnavailable, match="allocate memory"):
            await client.scan(clean)
        assert client.fdpass, "not a descriptor problem: the next scan hands the file again"


async def test_clamd_closing_without_a_verdict_is_unavailable(tmp_path):
    path = tmp_path / "closing.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    async def close_at_once() -> None:
        connection, _ = await asyncio.get_running_loop().sock_accept(listener)
        connection.close()

    listener.setblocking(False)
    closer = asyncio.create_task(close_at_once())
    try:
        with pytest.raises(ScannerUnavailable):
            await ClamdClient(ClamdAddress(path=str(path))).scan(message_file(tmp_path, BODY))
    finally:
        await closer
        listener.close()
