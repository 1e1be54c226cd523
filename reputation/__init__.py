"""DNSBL/SURBL lookups, SPF, DKIM and suspension rules. A library: never imports `relay`."""

from reputation.errors import ReputationError

__all__ = ["ReputationError"]
