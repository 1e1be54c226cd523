"""Which egress address (source IP + HELO name) a delivery uses: pure rotation and filtering.

The shared state of the IPs (disabled, listed, cooling down per domain) lives in Redis
(`egress_state.py`); a snapshot of it comes in here as an `EgressStatus`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from relay.config import Egress

__all__ = ["EgressPool", "EgressStatus"]


@dataclass(frozen=True)
class EgressStatus:
    """The pool's state as seen by one delivery to one destination domain."""

    disabled: Mapping[str, str] = field(default_factory=dict)
    """ip -> the operator's reason."""
    listed: Mapping[str, str] = field(default_factory=dict)
    """ip -> the evidence of the listing (a DNSBL answer)."""
    cooling: Mapping[str, float] = field(default_factory=dict)
    """ip -> end of its cool-down for this domain."""
    failures: Mapping[str, int] = field(default_factory=dict)
    """ip -> recent connection failures to this domain (below the cool-down threshold)."""

    def in_rotation(self, ip: str) -> bool:
        return ip not in self.disabled and ip not in self.listed

    def usable(self, ip: str, now: float) -> bool:
        return self.in_rotation(ip) and self.cooling.get(ip, 0.0) <= now

    def why_not(self, ip: str, now: float) -> str | None:
        """Why the IP cannot be used now, or None."""
        if ip in self.disabled:
            return f"disabled: {self.disabled[ip]}"
        if ip in self.listed:
            return f"listed: {self.listed[ip]}"
        if self.cooling.get(ip, 0.0) > now:
            return "cooling down"
        return None


class EgressPool:
    """Rotates over the configured egress addresses, separately per destination domain.

    Per-domain rotation spreads each destination's traffic evenly over every usable IP,
    whatever the order in which domains come; new domains start at successive IPs so that
    one-message domains spread too. The counters are bounded (least recently used dropped).
    """

    def __init__(self, egress: Sequence[Egress], *, max_domains: int = 10_000) -> None:
        self._egress = tuple(egress)
        self._max_domains = max_domains
        self._next: dict[str, int] = {}
        self._start = 0  # where a domain seen for the first time begins

    def __len__(self) -> int:
        return len(self._egress)

    @property
    def addresses(self) -> tuple[Egress, ...]:
        return self._egress

    def next(self, domain: str = "") -> Egress | None:
        """The egress to use for the next connection to `domain`; None: let the system pick."""
        return self.pick(domain, lambda egress: True)

    def pick(self, domain: str, usable: Callable[[Egress], bool]) -> Egress | None:
        """The next usable egress in `domain`'s rotation; None when none is usable.

        Unusable ones are skipped without losing their turn to the one after them.
        """
        if not self._egress:
            return None
        key = domain.lower().rstrip(".")
        index = self._next.pop(key, None)
        if index is None:
            index = self._start
            self._start = (self._start + 1) % len(self._egress)
        if len(self._next) >= self._max_domains:
            del self._next[next(iter(self._next))]
        for step in range(len(self._egress)):
            candidate = self._egress[(index + step) % len(self._egress)]
            if usable(candidate):
                self._next[key] = (index + step + 1) % len(self._egress)
                return candidate
        self._next[key] = index
        return None
