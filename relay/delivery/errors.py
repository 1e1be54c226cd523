"""Delivery errors that happen before any recipient outcome is known (routing, DNS)."""

from __future__ import annotations

from relay.errors import DeliveryError

__all__ = ["PermanentRouteError", "RouteError", "TlsPolicyFailure", "TransientRouteError"]


class RouteError(DeliveryError):
    """No next hop for a domain; `code` and `status` become every recipient's outcome."""

    code: int = 451
    status: str = "4.4.0"

    def __init__(self, message: str, *, status: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        if code is not None:
            self.code = code


class PermanentRouteError(RouteError):
    """The domain cannot receive mail (NXDOMAIN, null MX): bounce now."""

    code = 550


class TransientRouteError(RouteError):
    """DNS did not answer usefully (SERVFAIL, timeout, no usable MX host): retry later."""

    code = 451


class TlsPolicyFailure(DeliveryError):
    """The destination's TLS policy cannot be met (no STARTTLS, a failed handshake, a
    certificate or MX name that does not check out): the mail waits rather than going in
    clear or to the wrong server. `status`: 4.7.10 (encryption needed) or 4.7.5."""

    def __init__(
        self, message: str, *, status: str = "4.7.5", result_type: str = "validation-failure"
    ) -> None:
        super().__init__(message)
        self.status = status
        self.result_type = result_type
        """What a TLS report (RFC 8460 section 4.3) calls it, e.g. "certificate-host-mismatch"."""
