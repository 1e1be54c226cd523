"""A Redis connection whose transport was closed under it (a peer's reset, a failover)
fails as a ConnectionError, the error every retry and `store_errors` know, never as the
event loop's RuntimeError that killed the delivery loop in a Cluster failover."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError

from relay.config import Duration, RedisSettings
from relay.embedded_redis import EmbeddedRedis
from relay.redis_client import connect, connect_settings
from relay.redis_connections import guarded
from tests.conftest import free_port
from tests.support.redis_fleet import ClusterServers, SentinelGroup


@pytest.fixture(scope="module")
def one_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port())
    server.start()
    yield server
    server.stop()


class ResettingProxy:
    """Real TCP between the client and Redis; `reset()` sends the client a reset (RST) on
    every connection, as a restarted server, a failover or a firewall does."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.append(writer)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, RuntimeError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def reset(self) -> None:
        for writer in self.clients:
            linger = struct.pack("ii", 1, 0)  # close with a reset, not a FIN
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            writer.transport.abort()
        self.clients.clear()


def test_a_reset_idle_connection_fails_as_a_connection_error_under_uvloop(
    one_server: EmbeddedRedis,
) -> None:
    """uvloop is what `relay run` runs on; without the check its write raised
    `RuntimeError: unable to perform operation on <TCPTransport closed=True>`."""

    async def scenario() -> list[str]:
        proxy = ResettingProxy(one_server.port)
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = connect(f"redis://127.0.0.1:{port}", timeout=2)
        seen = []
        try:
            await client.set("reset-test", "before")
            proxy.reset()
            await asyncio.sleep(0.2)  # the reset has arrived: the transport is closed
            try:
                await client.get("reset-test")
            except RedisConnectionError:
                seen.append("connection error")
            seen.append((await client.get("reset-test")).decode())  # a new connection
        finally:
            await client.aclose()
            server.close()
        return seen

    assert uvloop.run(scenario()) == ["connection error", "before"]


async def test_the_check_is_on_every_client_kind(
    one_server: EmbeddedRedis, redis_cluster: ClusterServers, redis_sentinel: SentinelGroup
) -> None:
    """One server, the Cluster's nodes (those it starts from and those it finds) and the
    Sentinels' primary and the Sentinels themselves."""
    single = connect(one_server.url, timeout=2)
    assert single.connection_pool.connection_class is guarded(
        single.connection_pool.connection_class
    )
    await single.aclose()

    cluster = connect_settings(
        RedisSettings(cluster_nodes=(redis_cluster.url,), timeout=Duration(2))
    )
    try:
        await cluster.ping()
        nodes = cluster.nodes_manager.nodes_cache.values()  # type: ignore[attr-defined]
        assert len(nodes) == 6
        assert all(node.connection_class is guarded(node.connection_class) for node in nodes)
    finally:
        await cluster.aclose()

    sentinel = connect_settings(
        RedisSettings(
            sentinels=tuple(redis_sentinel.sentinels),
            service=redis_sentinel.service,
            timeout=Duration(2),
        )
    )
    try:
        await sentinel.ping()
        pool_class = sentinel.connection_pool.connection_class
        assert pool_class is guarded(pool_class) and pool_class.__name__.startswith("Checked")
        asked = sentinel.sentinel_group.sentinels  # type: ignore[attr-defined]
        assert all(c.connection_pool.connection_class.__name__.startswith("Checked") for c in asked)
    finally:
        await sentinel.aclose()


def test_guarded_is_one_class_per_class() -> None:
    from redis.asyncio.connection import Connection, SSLConnection

    assert guarded(Connection) is guarded(Connection) is guarded(guarded(Connection))
    assert issubclass(guarded(SSLConnection), SSLConnection)
    assert guarded(SSLConnection) is not guarded(Connection)
