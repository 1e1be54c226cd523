"""The one error root of `relay.content`; socket, HTTP and Redis errors become these."""

from __future__ import annotations

from relay.errors import NotFound, RelayError

__all__ = [
    "ContentError",
    "KeptAsEvidence",
    "NotInQuarantine",
    "ReleaseRefused",
    "ScannerUnavailable",
]


class ContentError(RelayError):
    """Base of the content package's errors."""


class ScannerUnavailable(ContentError):
    """A scanner did not give a verdict: down, past its deadline, or answering with an error.
    What happens to the message then is a config choice (`on_error`)."""

    def __init__(self, scanner: str, reason: str) -> None:
        super().__init__(f"{scanner}: {reason}")
        self.scanner = scanner
        self.reason = reason


class NotInQuarantine(NotFound, ContentError):
    """No quarantined message by that id (released, deleted or expired)."""


class ReleaseRefused(ContentError):
    """A release the rules do not allow now (malware by a customer, over quota, another
    node's body, already being released); the message says why."""


class KeptAsEvidence(ReleaseRefused):
    """Mail with malware, asked for by someone who is not an operator (its sender): it is
    kept one year for investigation, never released or deleted on request."""
