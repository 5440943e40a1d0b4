"""From NodeReport objects and Node labels to one probe's per-node states (pure)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from traceprobe_api.node_report import NodeReport
from traceprobe_operator.probe_status import NodeProbeState

log = logging.getLogger("traceprobe.operator")


def selected_nodes(nodes: list[tuple[str, dict[str, str]]],
                   node_selector: dict[str, str] | None) -> list[str]:
    """Names of nodes whose labels include every pair of the selector."""
    wanted = dict(node_selector or {})
    return sorted(name for name, labels in nodes
                  if all(labels.get(k) == v for k, v in wanted.items()))


def probe_states(reports: list[dict[str, Any]], kind: str, namespace: str | None, name: str,
                 now: datetime) -> dict[str, NodeProbeState]:
    """This probe's state on each node that reports on it; malformed reports are skipped."""
    states: dict[str, NodeProbeState] = {}
    for raw in reports:
        try:
            report = NodeReport.model_validate(raw)
        except ValidationError as exc:
            # One bad agent must not stop the summary of all others.
            log.warning("ignoring malformed NodeReport %s: %s",
                        raw.get("metadata", {}).get("name"), exc.errors()[:1])
            continue
        status = report.status
        if status is None:
            continue
        age = ((now - status.heartbeat_time).total_seconds()
               if status.heartbeat_time else float("inf"))
        for entry in status.probes or []:
            ref = entry.probe
            if (ref.kind.value, ref.namespace, ref.name) == (kind, namespace, name):
                states[report.spec.node_name] = NodeProbeState(
                    report.spec.node_name, entry.state.value, ref.generation,
                    entry.reason or "", entry.message or "", age)
    return states
