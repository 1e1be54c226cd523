"""The process's DNS answer cache for delivery: MX, A, AAAA, TLSA and MTA-STS TXT answers.

Every message to a domain needs the same MX and address answers; without a cache each
delivery asks the resolver again (three queries per message at least). dnspython's resolver
already computes each answer's lifetime the way RFC 2308 says: the smallest TTL of the
answer and its CNAME chain, and for NXDOMAIN/NODATA the SOA's TTL capped by its MINIMUM
field (a short default when the server sends no SOA). This cache keeps those answers for
that long, on the injected clock (so tests move time instead of sleeping), bounded in size
(least recently used out first), and counts hits and misses for metrics.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.rdatatype
import dns.resolver

from relay.clock import Clock

__all__ = ["CacheCounts", "CoalescingResolver", "DnsCache"]

_Key = tuple[Any, Any, Any]
"""(dns.name.Name, rdatatype, rdataclass), as dnspython's resolver asks."""


@dataclass(frozen=True)
class CacheCounts:
    hits: int
    """Answers served from the cache (positive or negative)."""
    misses: int
    """Answers fetched from a server and stored: the lookups the cache did not save."""
    size: int


class DnsCache:
    """A `resolver.cache` for dnspython's (async) resolver.

    The resolver calls `get` and `put` itself (it also looks up a cached NXDOMAIN under the
    ANY type); nothing else in the relay needs to know the cache exists. (No `__len__`:
    the resolver tests the cache for truth, and an empty cache must still be used.)
    """

    def __init__(self, clock: Clock, max_size: int = 10_000) -> None:
        self._clock = clock
        self._max_size = max(1, max_size)
        self._entries: OrderedDict[_Key, tuple[float, dns.resolver.Answer]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def counts(self) -> CacheCounts:
        return CacheCounts(self.hits, self.misses, len(self._entries))

    def get(self, key: _Key) -> dns.resolver.Answer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, answer = entry
        if self._clock.now() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return answer

    def put(self, key: _Key, value: dns.resolver.Answer) -> None:
        ttl = value.chaining_result.minimum_ttl
        self.misses += 1
        if ttl <= 0:
            return  # TTL 0: use once, never cache (RFC 1035 3.2.1)
        self._entries[key] = (self._clock.now() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)

    def flush(self, key: _Key | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)


class CoalescingResolver(dns.asyncresolver.Resolver):
    """An async resolver that sends one query for many callers asking the same at once.

    A cache alone does not help at the start, or when an answer expires under load: the 32
    deliveries that find it missing all ask before the first answer is stored. Here the
    first asks and the others wait for its answer (or its error).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inflight: dict[tuple[str, str, str], asyncio.Future[dns.resolver.Answer]] = {}
        self.coalesced = 0
        """Callers served by another caller's query (for tests and metrics)."""

    async def resolve(
        self, qname: Any, rdtype: Any = dns.rdatatype.A, *args: Any, **kwargs: Any
    ) -> dns.resolver.Answer:
        key = (str(qname).lower().rstrip("."), str(rdtype), repr((args, sorted(kwargs.items()))))
        waiting = self._inflight.get(key)
        if waiting is not None:
            self.coalesced += 1
            return await asyncio.shield(waiting)
        query = asyncio.ensure_future(super().resolve(qname, rdtype, *args, **kwargs))
        self._inflight[key] = query
        query.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(query)
