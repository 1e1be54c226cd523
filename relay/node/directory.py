"""The operators' side of the node registry: list the nodes, drain, resume, forget.

Each method touches a node's hash and the index in separate commands (two slots of a
cluster). A drain is the `drain` field of the node's hash: the node reads it back at its
next heartbeat, so a drain asked while the node is down applies when it returns, and
stays until `resume`.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from relay.clock import Clock
from relay.node.errors import NodeError
from relay.node.registry import DRAIN, NODES, NodeRecord, beat_age, node_key, node_state
from relay.redis_client import store_errors, text, text_dict

__all__ = ["NodeDirectory", "UnknownNode"]


class UnknownNode(NodeError):
    """No node of that id has ever beaten (or it was forgotten)."""


class NodeDirectory:
    def __init__(self, redis: aioredis.Redis, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock

    async def list(self) -> list[NodeRecord]:
        """Every node of the index, by id."""
        with store_errors():
            ids = sorted(text(i) for i in await self._redis.zrange(NODES, 0, -1))
            records = [await self.get(node_id) for node_id in ids]
        return [r for r in records if r is not None]

    async def get(self, node_id: str) -> NodeRecord | None:
        with store_errors():
            return NodeRecord.parse(text_dict(await self._redis.hgetall(node_key(node_id))))

    async def _known(self, node_id: str) -> NodeRecord:
        record = await self.get(node_id)
        if record is None:
            raise UnknownNode(f"no node {node_id!r} (see `relay node list`)")
        return record

    async def drain(self, node_id: str) -> bool:
        """Ask the node to stop accepting mail; False when it was asked already."""
        await self._known(node_id)
        with store_errors():
            return bool(await self._redis.hsetnx(node_key(node_id), DRAIN, repr(self._clock.now())))

    async def resume(self, node_id: str) -> bool:
        """Let the node accept mail again; False when it was not draining."""
        await self._known(node_id)
        with store_errors():
            return bool(await self._redis.hdel(node_key(node_id), DRAIN))

    async def forget(self, node_id: str) -> NodeRecord:
        """Remove a node gone for good from the registry (refused while it beats)."""
        record = await self._known(node_id)
        now = self._clock.now()
        state = node_state(record, now)
        if state in ("accepting", "draining"):
            raise NodeError(
                f"node {node_id!r} is {state} (it beat {beat_age(record, now):.1f}s ago):"
                " only a node that is down or stopped can be forgotten"
            )
        with store_errors():
            await self._redis.delete(node_key(node_id))
            await self._redis.zrem(NODES, node_id)
        return record
