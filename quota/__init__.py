"""Rate and quota maths, and their Redis store. A library: imports nothing of `relay`."""

from quota.decision import Decision, Verdict
from quota.errors import InvalidValue, QuotaError, QuotaUnavailable
from quota.plans import Limits, Plan, active_limits
from quota.rates import RateSpec
from quota.reference import ReferenceQuota
from quota.store import QuotaStore
from quota.units import Duration
from quota.usage import Usage, compute_usage

__all__ = [
    "Decision",
    "Duration",
    "InvalidValue",
    "Limits",
    "Plan",
    "QuotaError",
    "QuotaStore",
    "QuotaUnavailable",
    "RateSpec",
    "ReferenceQuota",
    "Usage",
    "Verdict",
    "active_limits",
    "compute_usage",
]
