"""The catch-all sink: what `relay sink` stores, and the hooks tests rely on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import pytest

from relay.config import HostPort, SinkSettings
from relay.sink import Sink, serve_sink
from tests.conftest import free_port

MESSAGE = b"Subject: hi\r\n\r\n.dot line\r\nbody\r\n"


async def deliver(
    port: int, sender: str = "a@x.test", rcpts: tuple[str, ...] = ("b@y.test",)
) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
        await smtp.sendmail(sender, list(rcpts), MESSAGE)


async def test_each_message_becomes_one_eml_file(tmp_path: Path) -> None:
    sink = Sink(directory=tmp_path / "mail", keep=False)
    async with sink.serving() as server:
        port = server.sockets[0].getsockname()[1]
        await deliver(port, rcpts=("b@y.test", "c@y.test"))
        await deliver(port, sender="")
        await sink.wait_for(2)
    files = sorted((tmp_path / "mail").iterdir())
    assert len(files) == 2 and all(f.suffix == ".eml" for f in files)
    contents = sorted(f.read_bytes() for f in files)
    assert contents == [
        b"Return-Path: <>\r\nX-Original-To: b@y.test\r\n" + MESSAGE,
        b"Return-Path: <a@x.test>\r\nX-Original-To: b@y.test\r\nX-Original-To: c@y.test\r\n"
        + MESSAGE,
    ]
    assert sink.messages == [] and sink.count == 2


async def test_a_refused_connection_gets_the_reply_instead_of_the_greeting() -> None:
    sink = Sink(reply_for_connect=lambda ip: "554 5.7.1 go away" if ip == "127.0.0.1" else None)
    async with sink.serving() as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as caught:
            await deliver(port)
    assert (caught.value.code, caught.value.message) == (554, "5.7.1 go away")


async def test_wait_for_gives_up_at_its_deadline() -> None:
    with pytest.raises(TimeoutError):
        await Sink().wait_for(1, timeout=0.05)


async def test_serve_sink_runs_until_cancelled(tmp_path: Path) -> None:
    port = free_port()
    settings = SinkSettings(address=HostPort(host="127.0.0.1", port=port), dir=tmp_path / "sink")
    task = asyncio.create_task(serve_sink(settings))
    try:
        for _ in range(1000):  # until it listens: let the task run, no timed sleep
            try:
                await deliver(port)
                break
            except aiosmtplib.SMTPConnectError:
                await asyncio.sleep(0)
        assert len(list((tmp_path / "sink").glob("*.eml"))) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
