"""The retry schedule as data: when to try again, when to warn the sender, when to give up."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from quota import Duration
from relay.errors import InvalidInput

if TYPE_CHECKING:
    from relay.config import DeliverySettings

__all__ = ["RetrySchedule"]

_INTERVAL = Duration(900.0)
_MAX_AGE = Duration(7 * 86400.0)
_DELAY_NOTICE_AFTER = Duration(3600.0)


@dataclass(frozen=True)
class RetrySchedule:
    """`RetrySchedule(interval=15m, max_age=7d, delay_notice_after=60m)`.

    Ages exclude the time a message spent held, so a hold never makes mail expire.
    """

    interval: Duration = _INTERVAL
    max_age: Duration = _MAX_AGE
    delay_notice_after: Duration = _DELAY_NOTICE_AFTER
    curve: tuple[Duration, ...] = ()
    """A destination's retry curve (its shaping rule): the wait after the 1st, 2nd...
    attempt, the last one repeated; empty: `interval` every time."""

    def __post_init__(self) -> None:
        if self.interval.seconds <= 0:
            raise InvalidInput(f"retry interval must be longer than 0s: {self.interval}")
        if self.max_age.seconds <= 0:
            raise InvalidInput(f"max age must be longer than 0s: {self.max_age}")
        if any(step.seconds <= 0 for step in self.curve):
            raise InvalidInput("every retry interval must be longer than 0s")

    @classmethod
    def parse(
        cls, interval: str = "15m", max_age: str = "7d", delay_notice_after: str = "60m"
    ) -> RetrySchedule:
        return cls(
            Duration.parse(interval), Duration.parse(max_age), Duration.parse(delay_notice_after)
        )

    @classmethod
    def from_settings(cls, delivery: DeliverySettings) -> RetrySchedule:
        return cls(delivery.retry_interval, delivery.max_age, delivery.delay_notice_after)

    def __str__(self) -> str:
        steps = ", ".join(str(step) for step in self.curve) if self.curve else ""
        every = f"after {steps} (the last repeated)" if steps else f"every {self.interval}"
        return f"{every} for {self.max_age}, delay notice after {self.delay_notice_after}"

    def expires_at(self, created_at: float, held_for: float = 0.0) -> float:
        return created_at + held_for + self.max_age.seconds

    def with_curve(self, curve: tuple[Duration, ...]) -> RetrySchedule:
        """This schedule with a destination's retry curve (the same when it is one step equal
        to the interval)."""
        if curve == (self.interval,) or curve == self.curve:
            return self
        return replace(self, curve=curve)

    def wait_after(self, attempt: int) -> float:
        """Seconds between attempt number `attempt` (1: the first) and the next."""
        if not self.curve:
            return self.interval.seconds
        return self.curve[min(max(attempt, 1), len(self.curve)) - 1].seconds

    def next_attempt(
        self, now: float, created_at: float, held_for: float = 0.0, attempt: int = 1
    ) -> float | None:
        """When to try again after a temporary failure of attempt number `attempt` at `now`;
        None: give up now.

        The last attempt happens at the expiry itself, so a message gets its whole max age.
        """
        expiry = self.expires_at(created_at, held_for)
        if now >= expiry:
            return None
        return min(now + self.wait_after(attempt), expiry)

    def delay_notice_due(self, now: float, created_at: float, held_for: float = 0.0) -> bool:
        return now - created_at - held_for >= self.delay_notice_after.seconds

    def attempts_until_expiry(self) -> int:
        """Attempts a message that always fails temporarily gets (the first one included)."""
        whole, rest = divmod(self.max_age.seconds, self.interval.seconds)
        return int(whole) + 1 + (1 if rest else 0)
