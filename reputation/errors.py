"""The one error root of the reputation package."""


class ReputationError(Exception):
    """Base of every error raised by `reputation`."""
