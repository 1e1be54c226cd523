"""DNSBL/SURBL lookups, link extraction, suspension rules. A library: never imports `relay`."""

from reputation.attribution import Attribution, attribute
from reputation.dnsbl import DnsblClient, Listing, LookupFailed, LookupResult, Zone
from reputation.errors import ReputationError
from reputation.suspension import (
    EscalationPolicy,
    Kind,
    NotAllowed,
    Status,
    Terms,
    check_deny,
    check_lift,
    terms_for,
)
from reputation.uris import Links, extract_links, registrable_domain

__all__ = [
    "Attribution",
    "DnsblClient",
    "EscalationPolicy",
    "Kind",
    "Links",
    "Listing",
    "LookupFailed",
    "LookupResult",
    "NotAllowed",
    "ReputationError",
    "Status",
    "Terms",
    "Zone",
    "attribute",
    "check_deny",
    "check_lift",
    "extract_links",
    "registrable_domain",
    "terms_for",
]
