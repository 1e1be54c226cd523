"""Who made an egress IP listed: the accounts that sent through it in the window before."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["Attribution", "attribute"]


@dataclass(frozen=True)
class Attribution:
    account: str
    messages: int
    share: float
    """Of the IP's traffic in the window, 0..1."""


def attribute(
    traffic: Mapping[str, int], *, policy: Literal["all", "share"], min_share: float
) -> list[Attribution]:
    """Accounts to suspend, largest share first: all senders, or those at or over a share."""
    total = sum(n for n in traffic.values() if n > 0)
    if total == 0:
        return []
    found = [Attribution(account, n, n / total) for account, n in traffic.items() if n > 0]
    if policy == "share":
        found = [a for a in found if a.share >= min_share]
    return sorted(found, key=lambda a: (-a.messages, a.account))
