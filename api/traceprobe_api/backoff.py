"""One retry delay for every component: doubling from `first` to `cap` (pure).

The operator, the agent and the map all retry what the API server refused or could
not answer; one rule, so a cluster-wide outage is retried the same way everywhere.
`jitter` spreads the retries of many replicas (0.5: each delay is 75-125 % of its
nominal value), so a restarted API server is not met by all of them at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    first: float = 5.0
    cap: float = 60.0
    jitter: float = 0.0
    rand: Callable[[], float] = field(default=random.random, repr=False)
    delay: float = 0.0
    """The nominal delay after the latest failure (0: none since the last success)."""
    next_at: float = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, now: float = 0.0) -> float:
        """Schedule the next attempt; return the delay until it."""
        self.delay = min(self.cap, max(self.first, self.delay * 2))
        wait = self.delay * (1.0 - self.jitter / 2 + self.jitter * self.rand()) \
            if self.jitter else self.delay
        self.next_at = now + wait
        return wait

    def succeeded(self) -> None:
        self.delay = self.next_at = 0.0
