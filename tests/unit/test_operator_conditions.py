from __future__ import annotations

from typing import Any

from traceprobe_operator.conditions import Condition, set_condition


def get_condition(conditions: list[Condition], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def test_transition_time_kept_while_status_unchanged() -> None:
    first = set_condition([], "Ready", False, "NodesPending", "0/2 ready", 1, now="T1")
    again = set_condition(first, "Ready", False, "NodesPending", "1/2 ready", 2, now="T2")
    cond = get_condition(again, "Ready")
    assert cond is not None
    assert (cond["lastTransitionTime"], cond["message"], cond["observedGeneration"]) == (
        "T1", "1/2 ready", 2)
    flipped = set_condition(again, "Ready", True, "AllNodesReady", "2/2 ready", 2, now="T3")
    assert get_condition(flipped, "Ready") == {
        "type": "Ready", "status": "True", "reason": "AllNodesReady", "message": "2/2 ready",
        "observedGeneration": 2, "lastTransitionTime": "T3"}
    assert len(flipped) == 1


def test_unknown_and_other_types_coexist() -> None:
    conds = set_condition([], "Accepted", True, "Valid", "ok", 1, now="T1")
    conds = set_condition(conds, "Ready", None, "Reconciling", "waiting", 1, now="T1")
    assert [c["type"] for c in conds] == ["Accepted", "Ready"]
    ready = get_condition(conds, "Ready")
    assert ready is not None and ready["status"] == "Unknown"
