"""The parts of one relay process under one task group, and what happens when one dies.

A process that accepts mail must be able to deliver it: if the delivery loop, the
reputation monitor or a listener dies (raises, or ends without being asked to), the
process logs which part died and why (`relay.part_died`), closes its listeners at once so
no client gets a `250` that nothing here will act on, lets the other parts stop cleanly
(deliveries in flight finish; the rest come back by lease), and raises `PartDied`, so the
process exits non-zero and its supervisor (or the service manager) starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from relay.node.errors import PartDied

__all__ = ["describe", "listening", "run_parts"]

log = structlog.get_logger("relay")

LISTENER_CHECK = 1.0
"""How often a listener's part checks that its server still serves."""


def describe(exc: BaseException) -> str:
    """An exception as one line: its type and message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_parts(
    parts: dict[str, Coroutine[Any, Any, None]],
    stop: asyncio.Event,
    *,
    close_listeners: Callable[[], None],
) -> None:
    """Run `parts` (name → coroutine that returns once `stop` is set) until `stop`.

    On `stop`, the listeners are closed first and the parts then end by themselves. When a
    part dies first, the listeners are closed at that moment, `stop` is set for the others,
    and `PartDied` is raised once every part has ended.
    """
    died: list[PartDied] = []

    def stopping() -> None:
        log.info("relay.stopping")
        close_listeners()

    async def until_stop() -> None:
        await stop.wait()
        stopping()

    async def watch(name: str, part: Coroutine[Any, Any, None]) -> None:
        error: BaseException | None = None
        try:
            await part
        except Exception as exc:
            error = exc
        if error is None and stop.is_set():
            return
        why = describe(error) if error is not None else "ended without being asked to stop"
        if died:  # a consequence of the first death, or another: logged, not the cause
            log.error("relay.part_failed", part=name, error=why)
            return
        died.append(PartDied(name, why))
        log.error("relay.part_died", part=name, error=why, exc_info=error)
        close_listeners()  # at once, before anything else awaits
        stop.set()

    if stop.is_set():
        for part in parts.values():
            part.close()
        stopping()
        return
    async with asyncio.TaskGroup() as group:
        group.create_task(until_stop(), name="part:stop")
        for name, part in parts.items():
            group.create_task(watch(name, part), name=f"part:{name}")
    if died:
        raise died[0]


async def listening(server: asyncio.Server, stop: asyncio.Event) -> None:
    """A listener's part: fails if its server stops serving while the process is not
    stopping (closed under us, its socket gone)."""
    while not stop.is_set():
        if not server.is_serving():
            raise ConnectionAbortedError("the listener stopped serving")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LISTENER_CHECK)
