"""Round-robin choice of the source address (egress IP + HELO name) for a delivery."""

from __future__ import annotations

from collections.abc import Sequence

from relay.config import Egress

__all__ = ["EgressPool"]


class EgressPool:
    """Rotates over the configured egress addresses, separately per destination domain.

    Per-domain rotation spreads each destination's traffic evenly over every IP, whatever the
    order in which domains come; new domains start at successive IPs so that one-message
    domains spread too. The counters are bounded (least recently used dropped).
    """

    def __init__(self, egress: Sequence[Egress], *, max_domains: int = 10_000) -> None:
        self._egress = tuple(egress)
        self._max_domains = max_domains
        self._next: dict[str, int] = {}
        self._start = 0  # where a domain seen for the first time begins

    def __len__(self) -> int:
        return len(self._egress)

    def next(self, domain: str = "") -> Egress | None:
        """The egress to use for the next connection to `domain`; None: let the system pick."""
        if not self._egress:
            return None
        key = domain.lower().rstrip(".")
        index = self._next.pop(key, None)
        if index is None:
            index = self._start
            self._start = (self._start + 1) % len(self._egress)
        if len(self._next) >= self._max_domains:
            del self._next[next(iter(self._next))]
        self._next[key] = (index + 1) % len(self._egress)
        return self._egress[index]
