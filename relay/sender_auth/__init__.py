"""Sender authentication for our customers' domains: sender identities, DKIM signing and
the SPF check."""

from relay.sender_auth.dkim_keys import DkimKeyStore, DkimSigner
from relay.sender_auth.identities import Identity, IdentityCache, IdentityMode, IdentityStore
from relay.sender_auth.spf import SpfChecker, SpfVerdict, spf_record

__all__ = [
    "DkimKeyStore",
    "DkimSigner",
    "Identity",
    "IdentityCache",
    "IdentityMode",
    "IdentityStore",
    "SpfChecker",
    "SpfVerdict",
    "spf_record",
]
