"""The benchmark's own tools count right (a bench that miscounts proves nothing). No timing."""

from __future__ import annotations

import asyncio

import pytest

from bench.hotspots import analyse
from bench.load import LoadSpec, run
from bench.sink import Counts, SinkProtocol


async def test_load_and_counting_sink_agree_message_by_message():
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(counts), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run(
            LoadSpec(port=port, messages=120, sessions=7, per_session=9, recipients=3, tls="plain")
        )
    finally:
        server.close()
        await server.wait_closed()
    assert len(result.acked) == 120 and not result.refusals and not result.errors
    assert result.sessions == 14 and result.recipients_acked == 360  # 13 x 9 + 3
    assert counts.messages == 120 and counts.recipients == 360
    assert dict(counts.ids) == {str(n): 1 for n in range(120)}


async def test_paced_load_with_warmup_sends_everything():
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(counts), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run(
            LoadSpec(
                port=port,
                messages=30,
                sessions=5,
                per_session=6,
                tls="plain",
                warmup=True,
                rate=500,
            )
        )
    finally:
        server.close()
        await server.wait_closed()
    assert len(result.acked) == 30 and counts.messages == 30


async def test_load_refuses_targets_off_loopback():
    with pytest.raises(ValueError, match="loopback"):
        await run(LoadSpec(port=25, host="192.0.2.1", messages=1, sessions=1, tls="plain"))


def test_sink_handles_pipelined_commands_and_split_packets():
    class Transport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.out = b""

        def write(self, data: bytes) -> None:
            self.out += data

        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.9", 1)

        def close(self) -> None:
            pass

    counts = Counts()
    sink = SinkProtocol(counts)
    transport = Transport()
    sink.connection_made(transport)
    stream = (
        b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
        b"X-Bench-Id: 7\r\n\r\n..dot\r\n.\r\n"
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n.\r\nQUIT\r\n"
    )
    for n in range(0, len(stream), 5):  # five bytes at a time
        sink.data_received(stream[n : n + 5])
    assert counts.messages == 2 and counts.recipients == 3
    assert dict(counts.ids) == {"7": 1} and dict(counts.peers) == {"127.0.0.9": 2}
    assert transport.out.count(b"354") == 2 and transport.out.endswith(b"221 2.0.0 bye\r\n")


def test_hotspots_count_the_event_loop_and_the_pool_apart(tmp_path):
    loop = "BaseEventLoop.run_forever (asyncio/base_events.py:607)"
    pool = "_WorkItem.run (concurrent/futures/thread.py:58)"
    idle = "_worker (concurrent/futures/thread.py:83)"
    (tmp_path / "raw.txt").write_text(
        f"{loop};accept (relay/submission/service.py:10);write (asyncio/sel.py:3) 6\n"
        f"{loop};accept (relay/submission/service.py:10) 2\n"
        f"{pool};verify_password (relay/accounts/passwords.py:5) 3\n"
        f"{idle} 50\n"
    )
    total, own, inclusive, threads = analyse(tmp_path / "raw.txt")
    assert total == 8, "only the event loop's samples count; an idle pool thread does not"
    assert own == {"asyncio/sel.py:write": 6, "relay/submission/service.py:accept": 2}
    assert inclusive["relay/submission/service.py:accept"] == 8
    assert threads == {"relay/accounts/passwords.py:verify_password": 3}
