"""The one error root of the quota package."""


class QuotaError(Exception):
    """Base of every error raised by `quota`."""


class InvalidValue(QuotaError, ValueError):
    """A rate, duration or limit that cannot be parsed or is out of range."""


class QuotaUnavailable(QuotaError):
    """The store (Redis) did not answer; callers must refuse temporarily, never allow."""
