"""STARTTLS on the real `relay run` (uvloop's loop and TLS layer, `loop.start_tls`): a whole
submission, and what a client sends in clear after STARTTLS is never executed (RFC 3207 4.2:
the command injection of CVE-2011-0411)."""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
import pytest

from relay.sink import Sink
from tests.conftest import PASSWORD, add_sender, free_port
from tests.support.relay_process import start_relay, stop_relay, write_config


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines = []
    while True:
        line = (await asyncio.wait_for(reader.readline(), 10)).decode()
        lines.append(line[4:].strip())
        if line[3:4] != "-":
            return int(line[:3]), "\n".join(lines)


@pytest.mark.timeout(90)
async def test_starttls_on_the_real_loop_submits_and_drops_what_came_in_clear(
    redis, redis_server, server_cert, ca, tmp_path
):
    await add_sender(redis)
    sink = Sink()
    async with sink.serving("127.0.0.1", 0) as server:
        submit_port = free_port()
        config = tmp_path / "relay.toml"
        write_config(
            config,
            redis_url=redis_server.url,
            server_cert=server_cert,
            submit_port=submit_port,
            sink_port=server.sockets[0].getsockname()[1],
            tls="starttls",
        )
        relay = await start_relay(config, submit_port)
        try:
            context = ssl.create_default_context()
            ca.configure_trust(context)
            async with aiosmtplib.SMTP(
                hostname="127.0.0.1", port=submit_port, start_tls=True, tls_context=context
            ) as smtp:
                assert "starttls" not in smtp.esmtp_extensions, "not offered twice"
                await smtp.login("alice", PASSWORD)
                _, reply = await smtp.sendmail(
                    "alice@example.org", ["bob@example.com"], b"Subject: hi\r\n\r\nhi\r\n"
                )
            assert reply.startswith("2.0.0 Queued as ")

            # A command pipelined in clear behind STARTTLS must not run inside TLS.
            reader, writer = await asyncio.open_connection("127.0.0.1", submit_port)
            assert (await _reply(reader))[0] == 220
            writer.write(b"EHLO client.test\r\n")
            assert (await _reply(reader))[0] == 250
            writer.write(b"STARTTLS\r\nHELP\r\n")
            assert (await _reply(reader))[0] == 220
            await writer.start_tls(context, server_hostname="localhost")
            writer.write(b"NOOP\r\n")
            code, text = await _reply(reader)
            assert (code, text) == (250, "2.0.0 OK"), "the first reply is to NOOP, not to HELP"
            writer.write(b"QUIT\r\n")
            assert (await _reply(reader))[0] == 221
            writer.close()
            async with asyncio.timeout(30):
                while not sink.messages:  # noqa: ASYNC110 (delivered by another process)
                    await asyncio.sleep(0.05)
        finally:
            await stop_relay(relay)
