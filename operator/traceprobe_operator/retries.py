"""Bounded retries and saying a failure once (pure: the clock is passed in).

What the API server refuses, or what it cannot be asked now, is retried with a
delay that doubles up to a cap; a failure is logged and posted as an Event when
it is new or says something new, not on every attempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from traceprobe_api.backoff import Backoff

__all__ = ["ApiBackoffs", "Backoff", "ProbeState", "Said"]


@dataclass
class Said:
    """The last thing said about each topic of one object."""

    last: dict[str, str] = field(default_factory=dict)

    def new(self, topic: str, message: str) -> bool:
        """True when `message` is news about `topic` (and remember it)."""
        if self.last.get(topic) == message:
            return False
        self.last[topic] = message
        return True

    def clear(self, topic: str) -> bool:
        """Forget `topic`; True when something had been said about it."""
        return self.last.pop(topic, None) is not None


@dataclass
class ProbeState:
    """What one operator process remembers of one probe (kept in its kopf memo)."""

    backoff: Backoff = field(default_factory=lambda: Backoff(first=5.0, cap=30.0))
    said: Said = field(default_factory=Said)
    pending_since: float | None = None
    legacy_checked: bool = False


class ApiBackoffs:
    """kopf's delays between attempts of one API request: its own first ones, then
    every 30 s without end. kopf gives up after its list and lets the operator die
    with a traceback; an API server that is away for a minute must only cost log
    lines ("Request attempt #N failed; will retry")."""

    FIRST = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)
    THEN = 30.0

    def __iter__(self) -> Iterator[float]:
        yield from self.FIRST
        while True:
            yield self.THEN
