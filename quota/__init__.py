"""Rate and quota maths, and their Redis store. A library: imports nothing of `relay`."""

from quota.errors import QuotaError
from quota.units import Duration

__all__ = ["Duration", "QuotaError"]
