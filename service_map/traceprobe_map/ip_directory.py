"""Who owned an IP address *when* (pure).

Pod IPs are reused: a record must be charged to the pod that held the address
at the record's time, not to whoever holds it now. Each address keeps a short
history of owners with [since, until) intervals; a released address keeps
answering for its last owner during a grace period, so late records of a
deleted pod still resolve, unless a newer owner claimed it since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
FOREVER = float("inf")


@dataclass
class _Tenure(Generic[T]):
    owner: T
    since: float
    until: float = FOREVER


@dataclass
class IpDirectory(Generic[T]):
    grace_seconds: float = 60.0
    max_history: int = 4  # tenures kept per address: bounded memory under churn
    on_change: Callable[[str], None] | None = None
    """Told each address whose history changed (a cache of answers forgets it)."""
    _by_ip: dict[str, list[_Tenure[T]]] = field(default_factory=dict)

    def claim(self, ip: str, owner: T, since: float) -> None:
        """`owner` holds `ip` from `since` on; a still-open previous tenure ends there."""
        history = self._by_ip.setdefault(ip, [])
        if history and history[-1].owner == owner and history[-1].until == FOREVER:
            return
        for tenure in history:
            if tenure.until == FOREVER:
                tenure.until = since
        history.append(_Tenure(owner, since))
        del history[:-self.max_history]
        self._changed(ip)

    def claim_past(self, ip: str, owner: T, since: float, until: float) -> None:
        """A tenure learnt after it ended (a pod first seen already finished: a Job that
        ran for a second). Kept only where no known tenure overlaps it."""
        history = self._by_ip.setdefault(ip, [])
        if until <= since or any(t.since < until and since < t.until for t in history):
            return
        history.append(_Tenure(owner, since, until))
        history.sort(key=lambda t: t.since)
        del history[:-self.max_history]
        self._changed(ip)

    def release(self, ip: str, owner: T, at: float) -> None:
        for tenure in self._by_ip.get(ip, []):
            if tenure.owner == owner and tenure.until == FOREVER:
                tenure.until = at
                self._changed(ip)

    def _changed(self, ip: str) -> None:
        if self.on_change is not None:
            self.on_change(ip)

    def knows(self, ip: str) -> bool:
        return ip in self._by_ip

    def current_span(self, ip: str, at: float) -> tuple[float, float] | None:
        """[since, until) of the latest tenure when it covers `at`: while the history
        does not change, `lookup` answers the same for any time in that span."""
        history = self._by_ip.get(ip)
        if history and history[-1].since <= at < history[-1].until:
            return history[-1].since, history[-1].until
        return None

    def lookup(self, ip: str, at: float) -> T | None:
        """The owner of `ip` at time `at`: the tenure covering `at`, else the most
        recent one that ended less than the grace period before `at` — unless a
        later tenure had begun by then."""
        history = self._by_ip.get(ip)
        if not history:
            return None
        last = history[-1]
        if last.since <= at < last.until:  # the usual case: the current tenure
            return last.owner
        for tenure in reversed(history):
            if tenure.since <= at < tenure.until:
                return tenure.owner
        for tenure in reversed(history):
            if tenure.until <= at < tenure.until + self.grace_seconds and not any(
                    t.since <= at and t.since >= tenure.until for t in history):
                return tenure.owner
        # A record stamped slightly before the first claim (clock skew): the first owner.
        first = history[0]
        return first.owner if at < first.since and first.since - at < self.grace_seconds else None

    def expire(self, now: float) -> int:
        """Forget tenures that ended more than the grace period ago; return how many."""
        dropped = 0
        for ip in list(self._by_ip):
            history = self._by_ip[ip]
            keep = [t for t in history if t.until + self.grace_seconds > now]
            if len(keep) != len(history):
                dropped += len(history) - len(keep)
                self._changed(ip)
            if keep:
                self._by_ip[ip] = keep
            else:
                del self._by_ip[ip]
        return dropped

    def __len__(self) -> int:
        return len(self._by_ip)
