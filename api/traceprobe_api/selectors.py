"""Kubernetes label selectors, evaluated the way the API server does (pure)."""

from __future__ import annotations

from typing import Any


def _expression(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op = expr.get("key", ""), expr.get("operator", "")
    values = set(expr.get("values") or [])
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False  # unknown operators match nothing, as the API server would refuse them


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """An empty or absent selector matches everything."""
    if not selector:
        return True
    wanted = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    return all(_expression(e, labels) for e in selector.get("matchExpressions") or [])
