"""Webhook signatures: HMAC-SHA256 over the timestamp and the body, pure.

What an endpoint receives, and how it checks it (README, "Webhooks"):

    Relay-Signature: t=1767225600,v1=5257a869e7ec…(64 hex digits)

1. Take `t` and `v1` from the header (there may be several `v1`: one per secret while a
   secret is being rotated; any may match).
2. Compute HMAC-SHA256 with the webhook's secret as key over `t`, a ".", and the raw body
   bytes exactly as received; compare it in constant time with `v1` (hex).
3. Refuse when `t` is more than 5 minutes from your clock: a captured request replayed later
   then fails, since changing `t` breaks the signature.
4. Deliveries are at least once: drop an event id (`Relay-Event-Id`, also `id` in the body)
   you have already handled.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["REPLAY_WINDOW", "sign", "signature_header", "verify"]

REPLAY_WINDOW = 300.0
"""Seconds between `t` and the receiver's clock that a receiver should accept."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, now: float, window: float = REPLAY_WINDOW
) -> bool:
    """What a receiver does (also used by `relay webhook test`'s explanation and tests)."""
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k.strip() == "t"]
    signatures = [v.strip() for k, _, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not signatures:
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > window:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in signatures)
