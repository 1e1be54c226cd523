"""Errors of the node: a process's part that died, a supervisor that gave up."""

from __future__ import annotations

from relay.errors import RelayError

__all__ = ["GaveUp", "NodeError", "PartDied"]


class NodeError(RelayError):
    """Base of the errors of `relay.node`."""


class PartDied(NodeError):
    """A part of `serve` (the delivery loop, the monitor, a listener) ended with an error or
    without being asked to; the process stopped its other parts and must exit non-zero."""

    def __init__(self, part: str, error: str) -> None:
        super().__init__(f"{part} died: {error}; stopped")
        self.part = part
        self.error = error


class GaveUp(NodeError):
    """The supervisor's children keep dying right after they start: restarting them again
    would only hide the problem."""
