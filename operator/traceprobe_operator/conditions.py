"""Kubernetes-style conditions: pure functions over plain dicts.

lastTransitionTime changes only when status flips: it tells how long a
condition has held, and a reconcile that re-asserts the same state leaves the
object unchanged (no write, no watch event).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Condition = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_condition(conditions: Any, type_: str) -> Condition | None:
    """The condition of type `type_` in a status's list (of any shape), if there is one."""
    for found in conditions if isinstance(conditions, list) else ():
        if isinstance(found, dict) and found.get("type") == type_:
            return found
    return None


def set_condition(conditions: list[Condition], type_: str, status: bool | None, reason: str,
                  message: str, generation: int, now: str | None = None) -> list[Condition]:
    """Return a new list with condition `type_` set; status None means Unknown."""
    value = "Unknown" if status is None else ("True" if status else "False")
    previous = next((c for c in conditions if c.get("type") == type_), None)
    transition = (previous["lastTransitionTime"]
                  if previous and previous.get("status") == value
                  and previous.get("lastTransitionTime") else (now or now_rfc3339()))
    updated: Condition = {"type": type_, "status": value, "reason": reason, "message": message,
                          "observedGeneration": generation, "lastTransitionTime": transition}
    return [c for c in conditions if c.get("type") != type_] + [updated]
