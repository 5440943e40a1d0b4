"""A probe's status summarised from its nodes' reports (pure).

Per-node detail stays in the NodeReport objects; the probe's status carries
counts and conditions whose messages name the first few problem nodes, so
`kubectl describe` explains a failure without growing with cluster size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from traceprobe_operator.conditions import Condition, set_condition

MAX_NAMED_NODES = 5


@dataclass(frozen=True)
class NodeProbeState:
    """One node's view of one probe, as its agent last reported it."""

    node: str
    state: str  # Attached, Degraded, Failed, Detached
    applied_generation: int
    reason: str = ""
    message: str = ""
    heartbeat_age_seconds: float = 0.0


def _named(items: list[str]) -> str:
    shown = "; ".join(items[:MAX_NAMED_NODES])
    more = len(items) - MAX_NAMED_NODES
    return shown + (f"; and {more} more" if more > 0 else "")


def summarise(generation: int, desired_nodes: list[str], reports: dict[str, NodeProbeState],
              conditions: list[Condition], stale_after: float,
              now: str | None = None) -> dict[str, Any]:
    """Status fields (nodes, nodesReady, conditions) for a probe at `generation`."""
    ready: list[str] = []
    failed: list[str] = []
    pending: list[str] = []
    degraded: list[str] = []
    for node in sorted(desired_nodes):
        report = reports.get(node)
        if report is None:
            pending.append(f"{node}: AgentNotReported")
        elif report.heartbeat_age_seconds > stale_after:
            failed.append(f"{node}: AgentNotReporting: no heartbeat for "
                          f"{report.heartbeat_age_seconds:.0f}s")
        elif report.state == "Failed":
            failed.append(f"{node}: {report.reason or 'Failed'}: {report.message}")
        elif report.applied_generation < generation:
            pending.append(f"{node}: Applying generation {generation}")
        elif report.state in ("Attached", "Degraded"):
            ready.append(node)
            if report.state == "Degraded":
                degraded.append(f"{node}: {report.reason or 'Degraded'}: {report.message}")
        else:
            pending.append(f"{node}: {report.state}")

    desired = len(desired_nodes)
    if desired == 0:
        conditions = set_condition(conditions, "Ready", False, "NoMatchingNodes",
                                   "no node matches the probe's nodeSelector", generation, now)
    elif len(ready) == desired:
        conditions = set_condition(conditions, "Ready", True, "AllNodesReady",
                                   f"{desired}/{desired} nodes ready", generation, now)
    else:
        reason = "NodesFailed" if failed else "NodesPending"
        conditions = set_condition(conditions, "Ready", False, reason,
                                   f"{len(ready)}/{desired} nodes ready; "
                                   f"{_named(failed + pending)}", generation, now)
    problems = failed + degraded
    if problems:
        conditions = set_condition(conditions, "Degraded", True,
                                   "NodesFailed" if failed else "NodesDegraded",
                                   _named(problems), generation, now)
    else:
        conditions = set_condition(conditions, "Degraded", False, "AsExpected",
                                   "no node reports a problem", generation, now)
    return {
        "observedGeneration": generation,
        "nodes": {"desired": desired, "ready": len(ready), "failed": len(failed)},
        "nodesReady": f"{len(ready)}/{desired}",
        "conditions": conditions,
    }
