"""What a bench run cost Redis: commands and round trips, per message, by command name.

Read from Redis itself before and after a run, so it sees every client of the relay (all
its processes and connections) without touching the relay:

- commands: `INFO commandstats` by name, `total_commands_processed` in all. Both count the
  commands a Lua script runs (`redis.call`) as well as the EVALSHA itself, and each command
  of a pipeline or of a MULTI/EXEC (MULTI and EXEC included).
- round trips: `total_writes_processed`, the times Redis wrote replies to a client. A request
  and its reply is one write, whatever it holds: a single command, a pipeline, a
  MULTI/EXEC, a script. It overcounts only when one reply is written in several pieces
  (past 64 KB, or a full socket buffer: bodies of hundreds of KB), and it also counts what
  a connection costs to open (redis-py's HELLO/CLIENT SETINFO) and the relay's polling
  while idle, which are real costs too.

The measuring costs one round trip and three INFO commands, which are taken off.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RedisCost", "RedisSnapshot", "cost", "snapshot"]

_OWN = "info"  # the snapshot's own command: never the relay's


@dataclass(frozen=True)
class RedisSnapshot:
    commands: int
    writes: int
    cpu: float
    """used_cpu_user + used_cpu_sys, seconds."""
    by_command: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RedisCost:
    commands: int
    round_trips: int
    cpu: float
    by_command: dict[str, int]

    def per(self, messages: int, top: int = 10) -> dict[str, Any]:
        """Per message (None without messages); `top` commands by count, Lua included."""
        if messages <= 0:
            return {
                "messages": 0,
                "commands": None,
                "round_trips": None,
                "lua_calls": None,
                "by_command": {},
            }
        ranked = Counter(self.by_command).most_common(top)
        return {
            "messages": messages,
            "commands": round(self.commands / messages, 2),
            "round_trips": round(self.round_trips / messages, 2),
            "lua_calls": round(self.lua_calls / messages, 2),
            "by_command": {name: round(n / messages, 2) for name, n in ranked},
        }

    @property
    def lua_calls(self) -> int:
        return sum(self.by_command.get(name, 0) for name in ("evalsha", "eval", "fcall"))


async def snapshot(redis: Any) -> RedisSnapshot:
    """The counters now, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.info("stats")
        pipe.info("commandstats")
        pipe.info("cpu")
        stats, commands, cpu = await pipe.execute()
    return RedisSnapshot(
        commands=int(stats["total_commands_processed"]),
        writes=int(stats["total_writes_processed"]),
        cpu=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        by_command={
            name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in commands.items()
        },
    )


def cost(before: RedisSnapshot, after: RedisSnapshot) -> RedisCost:
    """What ran between two snapshots, less the first snapshot's own INFO round trip."""
    by_command = {
        name: calls - before.by_command.get(name, 0)
        for name, calls in after.by_command.items()
        if name != _OWN and calls - before.by_command.get(name, 0) > 0
    }
    own = after.by_command.get(_OWN, 0) - before.by_command.get(_OWN, 0)
    return RedisCost(
        commands=after.commands - before.commands - own,
        round_trips=max(0, after.writes - before.writes - 1),
        cpu=after.cpu - before.cpu,
        by_command=by_command,
    )
