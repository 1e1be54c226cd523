"""When the supervisor restarts a child that died, and when it stops trying: pure decisions.

A child that ran for a while and died (a bug hit by one message, the kernel's OOM killer, an
operator's `kill`) is restarted at once: the node is back to full strength in about a
second. Children that die soon after they start point at something a restart will not fix
(Redis unreachable, a broken config or install, a poisoned job that kills every delivery
loop): they are restarted after a delay that doubles, and after `give_up_after` such deaths
in a row over the node the supervisor stops everything and exits with an error, so the
service manager and the operator see it instead of a node that flaps forever.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

__all__ = ["Restart", "RestartPolicy", "exit_status"]


@dataclass(frozen=True)
class Restart:
    delay: float | None
    """Seconds to wait before starting the replacement; None: give up."""
    streak: int
    """Fast deaths in a row over the node, this one included."""


@dataclass(frozen=True)
class RestartPolicy:
    healthy_after: float = 30.0
    """A child that ran at least this long was healthy: its death ends the streak."""
    first_delay: float = 0.5
    max_delay: float = 30.0
    give_up_after: int = 5
    """Fast deaths in a row (any child) after which the supervisor gives up."""

    def after_death(self, streak: int, ran_for: float) -> Restart:
        """`streak`: fast deaths in a row before this one; `ran_for`: the child's life."""
        if ran_for >= self.healthy_after:
            return Restart(0.0, 0)
        streak += 1
        if streak >= self.give_up_after:
            return Restart(None, streak)
        return Restart(min(self.max_delay, self.first_delay * 2 ** (streak - 1)), streak)


def exit_status(status: int) -> str:
    """A wait status as operators read it: "exit code 1", "killed by SIGKILL"."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
