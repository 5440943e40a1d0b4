"""Facts of probe objects as kopf and the API server hand them over (pure)."""

from __future__ import annotations

from typing import Any

from traceprobe_operator.conditions import Condition, find_condition
from traceprobe_operator.node_reports import ProbeKey

FINALIZER = "traceprobe.io/agents-detached"
"""Held while agents may still run a deleted probe (and kept by kopf's on.delete)."""


def meta(body: Any) -> Any:
    return body.get("metadata") or {}


def kind(body: Any) -> str:
    return str(body.get("kind") or "TraceProbe")


def key(body: Any) -> ProbeKey:
    return kind(body), meta(body).get("namespace"), str(meta(body)["name"])


def generation(body: Any) -> int:
    return int(meta(body).get("generation") or 1)


def deleting(body: Any) -> bool:
    return bool(meta(body).get("deletionTimestamp"))


def finalizers(body: Any) -> list[str]:
    return [str(f) for f in meta(body).get("finalizers") or []]


def condition(body: Any, type_: str) -> Condition | None:
    return find_condition((body.get("status") or {}).get("conditions"), type_)


def accepted(body: Any) -> bool:
    """Whether the probe's last decided Accepted condition is True."""
    found = condition(body, "Accepted")
    return found is not None and found.get("status") == "True"


def describe_key(probe: ProbeKey) -> str:
    kind_, namespace, name = probe
    return f"{kind_} {namespace}/{name}" if namespace else f"{kind_} {name}"
