"""Errors of the spool, under the relay's one root."""

from relay.errors import RelayError


class SpoolError(RelayError):
    """The spool cannot be written or read (disk full, permissions, I/O error)."""


class SpoolMissing(SpoolError):
    """A queued message's body is not in the spool: reported, never silently dropped."""


class SpoolFull(SpoolError):
    """No room for more DATA now (in-flight budget spent or disk nearly full)."""
