"""From NodeReport objects and Node labels to one probe's per-node states (pure)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from traceprobe_api.node_report import NodeReport
from traceprobe_operator.probe_status import NodeProbeState

log = logging.getLogger("traceprobe.operator")

ProbeKey = tuple[str, str | None, str]
"""A probe as NodeReports name it: (kind, namespace or None, name)."""


@dataclass(frozen=True)
class ReportedProbe:
    """One node's entry for one probe, as its agent last wrote it."""

    node: str
    state: str
    generation: int
    reason: str
    message: str
    heartbeat: datetime | None  # of the whole report; None when the agent never beat


def selected_nodes(nodes: Iterable[tuple[str, Mapping[str, str]]],
                   node_selector: Mapping[str, str] | None) -> list[str]:
    """Names of nodes whose labels include every pair of the selector."""
    wanted = dict(node_selector or {})
    return sorted({name for name, labels in nodes
                   if all(labels.get(k) == v for k, v in wanted.items())})


def reported_probes(raw: Mapping[str, Any]) -> dict[ProbeKey, ReportedProbe]:
    """Each probe a NodeReport has an entry for; none for a malformed report."""
    try:
        report = NodeReport.model_validate(dict(raw))
    except ValidationError as exc:
        # One bad agent must not stop the summary of all others.
        log.warning("ignoring malformed NodeReport %s: %s",
                    (raw.get("metadata") or {}).get("name"), exc.errors()[:1])
        return {}
    status = report.status
    if status is None:
        return {}
    node = report.spec.node_name
    return {(entry.probe.kind.value, entry.probe.namespace, entry.probe.name): ReportedProbe(
        node, entry.state.value, entry.probe.generation, entry.reason or "",
        entry.message or "", status.heartbeat_time) for entry in status.probes or []}


def probe_states(reported: Iterable[ReportedProbe], now: datetime) -> dict[str, NodeProbeState]:
    """One probe's state on each node that reports on it, heartbeat ages as of `now`."""
    return {r.node: NodeProbeState(
        r.node, r.state, r.generation, r.reason, r.message,
        (now - r.heartbeat).total_seconds() if r.heartbeat else float("inf"))
        for r in reported}
