"""A `250` is a promise: it survives `kill -9` of the relay and of Redis."""

from __future__ import annotations

import re
import signal

import pytest

from relay.clock import SystemClock
from relay.embedded_redis import EmbeddedRedis
from relay.queue import Envelope, QueueStore
from relay.redis_client import connect
from relay.sink import Sink
from tests.conftest import add_sender, free_port
from tests.support.relay_process import start_relay, stop_relay, submit, write_config
from tests.support.spool import temp_spool


@pytest.mark.timeout(90)
async def test_accepted_mail_survives_kill_9_of_the_relay(
    redis, redis_server, clock, server_cert, ca, tmp_path
):
    await add_sender(redis)
    submit_port = free_port()
    sink = Sink()
    async with sink.serving() as server:
        sink_port = server.sockets[0].getsockname()[1]
        config = tmp_path / "relay.toml"
        write_config(
            config,
            redis_url=redis_server.url,
            server_cert=server_cert,
            submit_port=submit_port,
            sink_port=sink_port,
        )

        # Accept only, then SIGKILL: nothing was delivered yet, all of it is in Redis.
        relay = await start_relay(config, submit_port, RELAY_DELIVERY__WORKERS="0")
        ids = [await submit(submit_port, ca, n) for n in range(20)]
        relay.send_signal(signal.SIGKILL)
        await relay.wait()
        assert sink.count == 0

        relay = await start_relay(config, submit_port)
        try:
            messages = await sink.wait_for(20, timeout=30)
        finally:
            assert await stop_relay(relay) == 0
    delivered = {re.search(rb" id ([0-9a-f]+);", m.data).group(1).decode() for m in messages}
    assert delivered == set(ids)


async def test_queued_message_survives_kill_9_of_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", port=free_port())
    server.start()
    client = connect(server.url, timeout=2)
    spool = temp_spool()
    queue = QueueStore(client, SystemClock(), spool)
    envelope = Envelope(mail_from="a@example.org", recipients=("b@example.com",), account="x")
    queue_id = await queue.enqueue(envelope, b"Subject: durable\r\n\r\nbody\r\n")
    server.kill()
    await client.aclose()
    server.start()
    client = connect(server.url, timeout=2)
    try:
        stored = await QueueStore(client, SystemClock(), spool).load(queue_id)
        assert stored.body == b"Subject: durable\r\n\r\nbody\r\n"
    finally:
        await client.aclose()
        server.stop()
