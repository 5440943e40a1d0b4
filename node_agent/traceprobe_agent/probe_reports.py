"""What this node's NodeReport says about each probe, and the status as a whole (pure:
the agent's facts in, the shared API models out; kube.py writes them)."""

from __future__ import annotations

from datetime import datetime

from traceprobe_agent.features import KernelFeatures
from traceprobe_agent.node_config import ProbeView
from traceprobe_agent.program import ProgramPlan
from traceprobe_api import __version__
from traceprobe_api.node_report import (
    ConnectionCore,
    MapUsage,
    NodeReportStatus,
    ProbeKind,
    ProbeRef,
    ProbeReport,
    ProbeState,
)

# Kernel drop counters that mean a bounded map was full (data lost, not merely unnamed).
FULL_MAP_COUNTERS = {"conn_map_full": "connection map", "edge_map_full": "edge map"}
_MESSAGE_MAX = 1024  # ProbeReport.message's limit in the CRD
_SHORT_MAX = 256  # the CRD's short texts
_PROGRAMS_MAX = 64  # ProbeReport.programs_attached's limit in the CRD
_RUNNING = (ProbeState.ATTACHED, ProbeState.DEGRADED)


class DropWatch:
    """Which full-map counters rose within the last `window_seconds` (pure: time given).

    A burst that filled a map shows as Degraded for a while, then clears, so a
    probe is not marked Degraded forever for one past spike."""

    def __init__(self, window_seconds: float = 300.0) -> None:
        self.window_seconds = window_seconds
        self._last: dict[str, int] = {}
        self._rose_at: dict[str, float] = {}

    def update(self, counters: dict[str, int], now: float) -> dict[str, int]:
        """Counter -> total, for the full-map counters that rose recently."""
        for name in FULL_MAP_COUNTERS:
            value = counters.get(name, 0)
            if value > self._last.get(name, 0):
                self._rose_at[name] = now
            self._last[name] = value
        return {n: self._last[n] for n, at in self._rose_at.items()
                if now - at < self.window_seconds and self._last.get(n)}


def probe_ref(probe: ProbeView) -> ProbeRef:
    return ProbeRef(kind=ProbeKind(probe.kind), namespace=probe.namespace or None,
                    name=probe.name, generation=probe.generation)


def probe_entry(probe: ProbeView, plan: ProgramPlan | None, programs: list[str],
                map_usage: dict[str, tuple[int, int]], drops: dict[str, int],
                load_error: str | None, full_maps: dict[str, int] | None = None,
                ceiling: int | None = None) -> ProbeReport:
    """This probe's entry in the NodeReport status; `ceiling`: the most connections a
    namespaced probe may ask for on this node (node_config.connections_ceiling)."""
    ref = probe_ref(probe)
    if probe.deleting:
        return ProbeReport(probe=ref, state=ProbeState.DETACHED, reason="ProbeDeleting",
                           message="programs for this probe are detached")
    if load_error or plan is None or not plan.runnable:
        why = load_error or (plan.problem() if plan else "not loaded") or ""
        return ProbeReport(probe=ref, state=ProbeState.FAILED,
                           reason="LoadFailed" if load_error else "TracepointMissing",
                           message=why[:_MESSAGE_MAX])
    state, reason, message = ProbeState.ATTACHED, None, None
    missing = {kind: tps for kind, tps in plan.missing.items() if kind in probe.kinds}
    if missing:
        state, reason = ProbeState.DEGRADED, "TracepointMissing"
        message = "; ".join(f"{kind} needs {', '.join(tps)}"
                            for kind, tps in sorted(missing.items()))
    elif full_maps:
        what = "; ".join(f"{FULL_MAP_COUNTERS[n]} full: {v} dropped" for n, v in
                         sorted(full_maps.items()))
        state, reason = ProbeState.DEGRADED, "MapFull"
        message = (f"{what} (capacity {plan.max_connections}); connections beyond it are "
                   "not counted: raise spec.limits.maxConnections")[:_MESSAGE_MAX]
    elif (ceiling is not None and probe.namespace_selector is None
          and probe.max_connections > ceiling):
        reason = "LimitClamped"
        message = (f"spec.limits.maxConnections {probe.max_connections} is above this "
                   f"node's ceiling for namespaced probes, {ceiling} (the largest of the "
                   "ClusterTraceProbes' limits, else 65536): tracking at most "
                   f"{plan.max_connections}")
    return ProbeReport(
        probe=ref, state=state, reason=reason, message=message,
        programs_attached=programs[:_PROGRAMS_MAX],
        map_usage=[MapUsage(name=n, entries=min(u, c), capacity=c)
                   for n, (u, c) in sorted(map_usage.items())],
        drops=dict(sorted(drops.items())))


def node_status(entries: list[ProbeReport], features: KernelFeatures, header_source: str,
                now: datetime, core: str | None = None,
                core_reason: str | None = None) -> NodeReportStatus:
    """The whole status: this agent and kernel, the connection core loaded (None: none
    yet) and why not the sock_ops one, and one entry per probe."""
    attached = sum(1 for e in entries if e.state in _RUNNING)
    return NodeReportStatus(
        connection_core=ConnectionCore(core) if core else None,
        connection_core_reason=(core_reason or "")[:_SHORT_MAX] or None if core else None,
        agent_version=__version__, kernel_release=features.release,
        kernel_features=features.as_report(), header_source=header_source,
        heartbeat_time=now.replace(microsecond=0), probes=entries,
        probes_attached=f"{attached}/{len(entries)}")
