"""The benchmark's own tools count right (a bench that miscounts proves nothing). No timing."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from pathlib import Path

import pytest

from bench.dovecot import CacheStats, Dovecot, dovecot_binary, parse_cache_stats
from bench.hotspots import analyse
from bench.load import LoadSpec, run
from bench.redis_cost import cost, snapshot
from bench.sink import Counts, SinkProtocol
from relay.accounts.passwords import hash_password


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


async def test_redis_cost_counts_commands_and_round_trips_as_redis_ran_them(redis):
    """A pipeline, a MULTI/EXEC and a script are one round trip each; their commands (the
    script's own included) all count; the measuring itself does not."""
    script = redis.register_script(
        "redis.call('set', KEYS[1], 1); return redis.call('incr', KEYS[1])"
    )
    await script(keys=["warm"])  # loaded, and the connection open, before the first snapshot
    before = await snapshot(redis)
    for n in range(5):
        await redis.set(f"k{n}", n)
    for _ in range(4):
        async with redis.pipeline(transaction=False) as pipe:
            pipe.incr("a")
            pipe.incr("b")
            pipe.get("a")
            await pipe.execute()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set("c", 1)
        pipe.get("c")
        await pipe.execute()
    for _ in range(3):
        await script(keys=["s"])
    spent = cost(before, await snapshot(redis))
    assert spent.round_trips == 5 + 4 + 1 + 3
    assert spent.commands == 5 + 4 * 3 + 4 + 3 * 3
    assert spent.by_command == {
        "set": 5 + 1 + 3,
        "incrby": 8,
        "get": 4 + 1,
        "multi": 1,
        "exec": 1,
        "evalsha": 3,
        "incr": 3,
    }
    per = spent.per(10, top=2)
    assert per["round_trips"] == 1.3 and per["commands"] == 3.0 and per["lua_calls"] == 0.3
    assert per["by_command"] == {"set": 0.9, "incrby": 0.8}
    assert spent.per(0)["commands"] is None


def test_dovecot_cache_counters_are_read_from_its_log():
    log = (
        "Dec 01 12:34:08 auth: Info: Authentication cache hits 0/0 (100%)\n"
        "Dec 01 12:35:08 auth: Info: Authentication cache hits 17/250 (6%)\n"
        "Dec 01 12:35:08 auth: Info: Authentication cache inserts: positive: 1 entries\n"
    )
    assert parse_cache_stats(log) == CacheStats(hits=17, lookups=250)
    assert parse_cache_stats("master: Info: starting up\n") is None


@pytest.mark.skipif(dovecot_binary() is None, reason="needs dovecot (bench/install-postfix.sh)")
def test_dovecot_of_the_bench_verifies_the_relays_argon2id_hashes(tmp_path):
    """Postfix+Dovecot is measured with the relay's own password hashes: Dovecot must accept
    them (right password) and refuse a wrong one, over the auth socket Postfix uses."""
    hashed = hash_password("bench-password-1")
    dovecot = Dovecot(
        tmp_path / "dovecot",
        socket=tmp_path / "auth",
        users=[("bench", hashed)],
        cache_size="10M",
    )
    dovecot.start()
    try:
        assert _dovecot_auth(tmp_path / "auth", "bench", "bench-password-1").startswith("OK\t1")
        assert _dovecot_auth(tmp_path / "auth", "bench", "wrong").startswith("FAIL\t1")
        stats = dovecot.cache_stats()
        assert stats is not None and stats.hits == 0  # passwd-file: Dovecot never caches it
    finally:
        dovecot.stop()


def _dovecot_auth(path: Path, login: str, password: str) -> str:
    """One AUTH PLAIN over Dovecot's auth protocol (what Postfix's smtpd sends)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
        handshake = b""
        while b"DONE\n" not in handshake:
            handshake += sock.recv(4096)
        response = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
        sock.sendall(
            f"AUTH\t1\tPLAIN\tservice=smtp\tsecured\tno-penalty\tnologin\tresp={response}\n".encode()
        )
        return sock.recv(4096).decode()
