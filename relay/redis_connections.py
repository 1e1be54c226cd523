"""Redis connections whose transport was closed under them fail as a ConnectionError.

redis-py 8.1 writes to a connection's transport without asking whether it is still open.
When the peer reset an idle pooled connection (a Redis restart, a failover, a firewall),
or another task disconnected the connection mid-use (a cluster client dropping a node it
no longer knows), the write leaks the event loop's own error instead of a ConnectionError:
uvloop's `RuntimeError: unable to perform operation on <TCPTransport closed=True>`, or an
`AttributeError`/`TypeError` from a writer that is already gone (redis-py issue 4287).
Those are not RedisErrors: no retry sees them and they killed the delivery loop during a
Cluster failover.

`guarded(cls)` is `cls` with its writes checked: a write that fails on a transport that is
closed (or a writer already gone) is an OSError there (nothing is checked before the write,
so a write that succeeds costs what it did), which redis-py turns into a ConnectionError (and
disconnects), so its retries and the relay's `store_errors` see an ordinary failure. Every
client the relay makes passes its `redis.timeout` as the socket timeout, so every write
goes through `_send_packed_command`, the method replaced here.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

__all__ = ["guarded"]

C = TypeVar("C")


class _CheckedWrites:
    """Mixed in before a redis-py connection class."""

    _writer: asyncio.StreamWriter | None

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        writer = self._writer  # None: disconnected by another task meanwhile
        try:
            writer.writelines(command)  # type: ignore[union-attr]  # None: AttributeError
            await writer.drain()  # type: ignore[union-attr]
        except (AttributeError, TypeError, RuntimeError) as exc:
            if writer is not None and not writer.transport.is_closing():
                raise  # not a closed transport: a bug to see as it is
            raise ConnectionResetError(
                errno.ECONNRESET, f"the connection was closed under this write ({exc})"
            ) from exc


_GUARDED: dict[type[Any], type[Any]] = {}


def guarded(cls: type[C]) -> type[C]:
    """`cls` (a redis-py async connection class) with `_CheckedWrites` before it; the same
    class each time for the same `cls`."""
    if issubclass(cls, _CheckedWrites):
        return cls
    if cls not in _GUARDED:
        _GUARDED[cls] = type(f"Checked{cls.__name__}", (_CheckedWrites, cls), {})
    return _GUARDED[cls]
