"""Sender authentication for our customers' domains: DKIM signing and the SPF check."""

from relay.sender_auth.dkim_keys import DkimKeyStore, DkimSigner
from relay.sender_auth.spf import SpfChecker, SpfVerdict, spf_record

__all__ = ["DkimKeyStore", "DkimSigner", "SpfChecker", "SpfVerdict", "spf_record"]
