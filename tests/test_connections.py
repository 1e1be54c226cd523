"""Connection slots of the submission listeners (issue 17, row 5 and row 7): a deadline to
authenticate by, IPv6 clients counted by /64, bounded TLS handshakes logged in one line."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

import pytest
from structlog.testing import capture_logs

from relay.submission.guard import ConnectionLimits
from tests.conftest import PASSWORD, add_sender
from tests.support.guarded import RawClient, guarded_stack


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


# --- the pure limit ---


def test_addresses_of_one_ipv6_64_share_one_connection_limit():
    limits = ConnectionLimits(total=10, per_ip=2)
    assert limits.admit("2001:db8:1:2::1") is None
    assert limits.admit("2001:db8:1:2:ffff:ffff:ffff:fffe") is None
    assert limits.admit("2001:db8:1:2::99") == (
        "421 4.7.0 Too many connections from 2001:db8:1:2::/64, try again later"
    )
    assert limits.admit("2001:db8:1:3::1") is None, "the next /64 is another client"
    limits.release("2001:db8:1:2::1")  # released by any address of the /64
    assert limits.admit("2001:db8:1:2::77") is None
    assert limits.admit("::ffff:192.0.2.1") is None and limits.admit("192.0.2.1") is None
    assert limits.admit("192.0.2.1") is not None, "an IPv4-mapped address is its IPv4 address"


# --- over real sockets ---


@pytest.mark.timeout(30)
async def test_a_client_that_never_authenticates_is_closed_at_the_deadline_despite_noops(
    redis, clock, server_cert, ca
):
    await add_sender(redis)
    async with guarded_stack(
        redis, clock, server_cert, ca, timeouts={"pre_auth": "1500ms", "command": "5m"}
    ) as stack:
        idle = await RawClient.connect(stack.starttls_port, source="127.0.0.90")
        started = time.monotonic()
        assert (await idle.reply())[0] == 220
        assert (await idle.command(b"EHLO idle.test"))[0] == 250
        # A customer who logs in keeps the session past the deadline.
        customer = await RawClient.connect(
            stack.implicit_port, tls=stack.client_tls, source="127.0.0.91"
        )
        assert (await customer.reply())[0] == 220
        await customer.command(b"EHLO customer.test")
        assert (await customer.login("alice", PASSWORD))[0] == 235
        with capture_logs() as logs:
            while True:
                reply = await idle.command(b"NOOP")
                if reply[0] != 250:
                    break
                assert time.monotonic() - started < 10, "NOOPs kept the session open"
                await asyncio.sleep(0.3)
            closed_after = time.monotonic() - started
            assert reply == (421, "4.7.0 Not authenticated in time, closing connection")
            assert await idle.closed() == b""
        await idle.close()
        assert 1.5 <= closed_after < 5
        assert [e["event"] for e in logs] == ["submission.pre_auth_timeout"]
        assert logs[0]["peer"] == "127.0.0.90"
        assert (await customer.command(b"NOOP"))[0] == 250
        await customer.close()


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1)")
async def test_the_per_address_limit_counts_an_ipv6_client_by_its_64(redis, clock, server_cert, ca):
    async with guarded_stack(
        redis, clock, server_cert, ca, host="::1", max_connections_per_ip=2
    ) as stack:
        held = []
        for _ in range(2):
            client = await RawClient.connect(stack.starttls_port, source="::1")
            assert (await client.reply())[0] == 220
            held.append(client)
        extra = await RawClient.connect(stack.starttls_port, source="::1")
        assert await extra.reply() == (
            421,
            "4.7.0 Too many connections from ::/64, try again later",
        )
        for client in [*held, extra]:
            await client.close()


def _no_traceback(logs: list[dict], caplog: pytest.LogCaptureFixture) -> None:
    assert not [e for e in logs if "exc_info" in e or e.get("log_level") == "error"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.timeout(30)
async def test_a_stalled_starttls_handshake_is_closed_after_the_timeout_in_one_log_line(
    redis, clock, server_cert, ca, caplog
):
    async with guarded_stack(
        redis,
        clock,
        server_cert,
        ca,
        timeouts={"tls_handshake": "1s"},
        max_connections_per_ip=1,
    ) as stack:
        client = await RawClient.connect(stack.starttls_port, source="127.0.0.95")
        assert (await client.reply())[0] == 220
        await client.command(b"EHLO stall.test")
        with capture_logs() as logs:
            assert (await client.command(b"STARTTLS"))[0] == 220
            started = time.monotonic()
            assert await client.closed(timeout=10) == b""  # asyncio's default: 60 s
            assert time.monotonic() - started < 5
            await client.close()
            await asyncio.sleep(0.1)
        assert [(e["event"], e["peer"], e["error"]) for e in logs] == [
            ("tls.handshake_failed", "127.0.0.95", "timeout after 1s")
        ]
        _no_traceback(logs, caplog)
        # The slot of that address was given back.
        again = await RawClient.connect(stack.starttls_port, source="127.0.0.95")
        assert (await again.reply())[0] == 220
        await again.close()


async def test_a_failed_handshake_on_either_listener_is_one_log_line(
    redis, clock, server_cert, ca, caplog
):
    async with guarded_stack(
        redis, clock, server_cert, ca, timeouts={"tls_handshake": "1s"}
    ) as stack:
        with capture_logs() as logs:
            plain = await RawClient.connect(stack.starttls_port, source="127.0.0.96")
            assert (await plain.reply())[0] == 220
            assert (await plain.command(b"STARTTLS"))[0] == 220
            await plain.send(b"GET / HTTP/1.0\r\n\r\n")  # not a TLS client
            assert await plain.closed() == b""
            await plain.close()
            implicit = await RawClient.connect(stack.implicit_port, source="127.0.0.97")
            await implicit.send(b"EHLO not.tls\r\n")
            assert await implicit.closed() == b""
            await implicit.close()
            stalled = await RawClient.connect(stack.implicit_port, source="127.0.0.98")
            started = time.monotonic()
            assert await stalled.closed() == b""
            assert time.monotonic() - started < 5
            await stalled.close()
            # A client that does not trust our certificate.
            distrust = ssl.create_default_context()
            with pytest.raises(ssl.SSLError):
                await RawClient.connect(stack.implicit_port, tls=distrust, source="127.0.0.99")
            await asyncio.sleep(0.2)
        failed = sorted(
            (e["peer"], e["error"]) for e in logs if e["event"] == "tls.handshake_failed"
        )
        assert [peer for peer, _ in failed] == [
            "127.0.0.96",
            "127.0.0.97",
            "127.0.0.98",
            "127.0.0.99",
        ]
        assert failed[0][1] == "HTTP_REQUEST" and failed[2][1] == "timeout after 1s"
        assert len(logs) == 4
        _no_traceback(logs, caplog)
