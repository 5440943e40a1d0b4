"""Probes and per-node readiness, with the reason for anything not Ready (pure).

Reads the objects as the API server returns them (dicts) through the shared
status models, so a field renamed in traceprobe_api is renamed here too; only
the status parts are parsed (tolerant readers), so a spec field newer than this
CLI does not stop it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from traceprobe_api.node_report import NodeReportStatus, ProbeState
from traceprobe_api.probe import ConditionType, TraceProbeStatus
from traceprobe_cli.render import table

STALE_AFTER_SECONDS = 90.0
"""The operator's default for a silent agent (TRACEPROBE_REPORT_STALE_SECONDS)."""


@dataclass
class Status:
    probes: list[dict[str, str]] = field(default_factory=list)
    nodes: list[dict[str, str]] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)
    """One line per thing that is not Ready, naming it and why."""

    def as_dict(self) -> dict[str, Any]:
        return {"probes": self.probes, "nodes": self.nodes, "notReady": self.not_ready}


def _probe_name(kind: str, namespace: str | None, name: str | None) -> str:
    return f"{namespace}/{name}" if kind == "TraceProbe" else str(name)


def _probe_row(raw: dict[str, Any], status: Status) -> None:
    kind = raw.get("kind", "TraceProbe")
    meta = raw.get("metadata", {})
    name = _probe_name(kind, meta.get("namespace"), meta.get("name"))
    try:
        observed = TraceProbeStatus.model_validate(raw["status"]) if raw.get("status") else None
    except ValidationError as exc:
        status.probes.append({"kind": kind, "name": name, "ready": "Unknown", "nodes": "-"})
        status.not_ready.append(f"{kind} {name}: unreadable object: {exc.errors()[0]['msg']}")
        return
    ready = next((c for c in (observed.conditions or []) if c.type == ConditionType.READY),
                 None) if observed else None
    row = {"kind": kind, "name": name, "ready": ready.status.value if ready else "Unknown",
           "nodes": (observed.nodes_ready if observed else None) or "-"}
    status.probes.append(row)
    generation = meta.get("generation")
    if observed is None or ready is None:
        status.not_ready.append(f"{kind} {name}: no status yet (is the operator running?)")
    elif ready.status.value != "True":
        status.not_ready.append(f"{kind} {name}: {ready.reason}: {ready.message}".rstrip(": "))
    elif generation and (observed.observed_generation or 0) < generation:
        status.not_ready.append(f"{kind} {name}: generation {generation} not yet observed"
                                f" by the operator (status is for"
                                f" {observed.observed_generation})")


def _node_row(raw: dict[str, Any], status: Status, now: datetime, stale_after: float) -> None:
    node = raw.get("metadata", {}).get("name", "?")
    try:
        observed = NodeReportStatus.model_validate(raw["status"]) if raw.get("status") else None
    except ValidationError as exc:
        status.nodes.append({"node": node, "ready": "Unknown", "probes": "-",
                             "heartbeat": "-", "agent": "-"})
        status.not_ready.append(f"node {node}: unreadable NodeReport: {exc.errors()[0]['msg']}")
        return
    reasons: list[str] = []
    heartbeat = observed.heartbeat_time if observed else None
    age = (now - heartbeat).total_seconds() if heartbeat else None
    if age is None:
        reasons.append("AgentNotReporting: no heartbeat yet")
    elif age > stale_after:
        reasons.append(f"AgentNotReporting: no heartbeat for {age:.0f}s")
    for condition in (observed.conditions or []) if observed else []:
        if condition.type == "Ready" and condition.status.value != "True":
            reasons.append(f"agent {condition.reason}: {condition.message}".rstrip(": "))
    for entry in (observed.probes or []) if observed else []:
        if entry.state in (ProbeState.ATTACHED, ProbeState.DETACHED):
            continue
        ref = entry.probe
        text = f"{_probe_name(ref.kind.value, ref.namespace, ref.name)} {entry.state.value}"
        if entry.reason:
            text += f" ({entry.reason})"
        reasons.append(text + (f": {entry.message}" if entry.message else ""))
    status.nodes.append({
        "node": node, "ready": "False" if reasons else "True",
        "probes": (observed.probes_attached if observed else None) or "-",
        "heartbeat": f"{age:.0f}s ago" if age is not None else "never",
        "agent": (observed.agent_version if observed else None) or "-"})
    status.not_ready += [f"node {node}: {reason}" for reason in reasons]


def build_status(probes: list[dict[str, Any]], cluster_probes: list[dict[str, Any]],
                 reports: list[dict[str, Any]], now: datetime | None = None,
                 stale_after: float = STALE_AFTER_SECONDS) -> Status:
    now = now or datetime.now(UTC)
    status = Status()
    for raw in sorted(probes, key=lambda p: (p["metadata"].get("namespace", ""),
                                             p["metadata"]["name"])):
        _probe_row({"kind": "TraceProbe", **raw}, status)
    for raw in sorted(cluster_probes, key=lambda p: p["metadata"]["name"]):
        _probe_row({"kind": "ClusterTraceProbe", **raw}, status)
    for raw in sorted(reports, key=lambda r: r["metadata"]["name"]):
        _node_row(raw, status, now, stale_after)
    return status


def status_text(status: Status) -> str:
    """The tables and the reasons; only for lists that were read (empty means none)."""
    parts = []
    if status.probes:
        parts.append(table(["PROBE", "KIND", "READY", "NODES"],
                           [[p["name"], p["kind"], p["ready"], p["nodes"]]
                            for p in status.probes]))
    else:
        parts.append("No TraceProbes or ClusterTraceProbes.\n")
    if status.nodes:
        parts.append(table(["NODE", "READY", "PROBES", "HEARTBEAT", "AGENT"],
                           [[n["node"], n["ready"], n["probes"], n["heartbeat"], n["agent"]]
                            for n in status.nodes]))
    else:
        parts.append("No NodeReports: no agent has reported yet.\n")
    if status.not_ready:
        parts.append("Not ready:\n" + "".join(f"  {line}\n" for line in status.not_ready))
    return "\n".join(parts)
