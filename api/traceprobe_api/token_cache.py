"""Decisions about bearer tokens, remembered briefly and in bounded number.

Both the agent's /metrics and the map's ingest ask the API server about each new
token; a token seen again within its entry's life is answered from here. Keys are
the tokens' SHA-256 (no token is kept), and at most `max_entries` are held, least
recently used going first, so random tokens cannot grow a process's memory.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, else None."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class TokenCache(Generic[T]):
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str, now: float) -> T | None:
        """The decision kept for `token`, unless its entry has expired by `now`."""
        key = self._key(token)
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or hit[0] <= now:
                return None
            self._entries.move_to_end(key)
            return hit[1]

    def put(self, token: str, until: float, decision: T) -> None:
        key = self._key(token)
        with self._lock:
            self._entries[key] = (until, decision)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
