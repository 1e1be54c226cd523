"""The one error root of the relay package; dependency errors are translated into these."""


class RelayError(Exception):
    """Base of every error raised by `relay`."""


class ConfigError(RelayError):
    """The configuration cannot be loaded; the message names the key and the problem."""


class StoreUnavailable(RelayError):
    """Redis did not answer (down, unreachable, or past the deadline)."""


class NotReplicated(StoreUnavailable):
    """A write reached fewer replicas than `redis.wait_replicas` in time (it was made on the
    primary: the caller undoes it or lets it stand)."""


class NotFound(RelayError):
    """An account, message or job that does not exist."""


class InvalidInput(RelayError, ValueError):
    """A value given by an operator or client that cannot be used (names the value)."""


class EmbeddedRedisError(RelayError):
    """The embedded redis-server could not be found or started."""


class DeliveryError(RelayError):
    """A delivery attempt failed before any recipient outcome was known."""


class VerificationFailed(RelayError):
    """A sender identity could not be verified: its DNS token is missing, or DNS failed."""


class Busy(RelayError):
    """A bounded resource (the password-hashing queue) is full: the client tries later."""


class AuthLocked(RelayError):
    """An AUTH attempt refused because its login or address is locked (brute force)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply
