"""What TLS a delivery must have, and the certificate checks that go with it.

Opportunistic TLS (the default) encrypts but authenticates nothing, because MX
certificates are often self-signed; a destination's rule can ask for more (`required`:
STARTTLS must succeed; `verify`: and the certificate must be valid for the MX host name),
and so can the domain's own MTA-STS policy (RFC 8461, relay/delivery/mta_sts.py). When the
requirement cannot be met the mail waits (4.7.x) rather than going in clear or to a server
that is not the domain's.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from relay.delivery.dane import TlsaRecord
from relay.delivery.mta_sts import MtaStsPolicy
from relay.delivery.shaping import ShapingRule, TlsMode

__all__ = [
    "TlsRequirement",
    "mx_matches",
    "opportunistic_context",
    "tls_requirement",
    "verifying_context",
]


@dataclass(frozen=True)
class TlsRequirement:
    mode: TlsMode = "opportunistic"
    mx_patterns: tuple[str, ...] = ()
    """MTA-STS `mx` patterns the MX host must match (empty: any MX)."""
    policy: str = "opportunistic"
    """Which policy applied, for each delivery log line: "opportunistic", "rule gmail:
    required", "mta-sts enforce", "mta-sts testing"..."""
    ca_file: Path | None = field(default=None, compare=False)
    """Extra trust anchors (a private CA) besides the system's, for `verify`."""
    report_only: bool = False
    """MTA-STS `testing`: check the MX list and the certificate as `enforce` would, report
    what fails (RFC 8460), deliver as `mode` says all the same."""
    tlsa: tuple[tuple[str, tuple[TlsaRecord, ...]], ...] = ()
    """(MX host, its DNSSEC-validated TLSA records): DANE applies to those hosts (RFC 7672),
    before MTA-STS and the rule's mode (RFC 8461 section 2)."""

    def dane_for(self, host: str) -> tuple[TlsaRecord, ...] | None:
        for name, records in self.tlsa:
            if name == host:
                return records
        return None

    @property
    def encrypt(self) -> bool:
        return self.mode != "opportunistic"

    def allows_mx(self, host: str) -> bool:
        """MTA-STS's MX list; a host that DANE authenticates is the domain's by DNSSEC."""
        if self.dane_for(host) is not None:
            return True
        return not self.mx_patterns or any(mx_matches(p, host) for p in self.mx_patterns)

    def context(self, *, verify: bool = False) -> ssl.SSLContext:
        if self.mode == "verify" or verify:
            return verifying_context(str(self.ca_file) if self.ca_file else "")
        return opportunistic_context()


def tls_requirement(
    rule: ShapingRule, sts: MtaStsPolicy | None, ca_file: Path | None = None
) -> TlsRequirement:
    """The stricter of the rule's TLS mode and the domain's MTA-STS policy: `enforce` means
    verify the certificate and send only to a listed MX; `testing` changes nothing but the
    label (failures are reported, mail still goes)."""
    if sts is not None and sts.mode == "enforce":
        return TlsRequirement("verify", sts.mx, "mta-sts enforce", ca_file)
    label = "opportunistic" if rule.tls == "opportunistic" else f"rule {rule.name}: {rule.tls}"
    if sts is not None and sts.mode == "testing":
        return TlsRequirement(
            rule.tls, sts.mx, f"{label} (mta-sts testing)", ca_file, report_only=True
        )
    return TlsRequirement(rule.tls, (), label, ca_file)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 section 4.1: "mx.example.com" matches itself; "*.example.com" matches one
    label more ("a.example.com", not "a.b.example.com" nor "example.com")."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


@functools.cache
def opportunistic_context() -> ssl.SSLContext:
    """Encrypt, do not authenticate (MX certificates are often self-signed)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@functools.cache
def verifying_context(ca_file: str = "") -> ssl.SSLContext:
    """The system's trust anchors (and `ca_file`'s), host name checked, TLS 1.2 or newer."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context
