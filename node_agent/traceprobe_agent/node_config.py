"""Which probes apply to this node, what the kernel program must do for them,
and how each probe's state is reported (pure; Kubernetes I/O is in cluster.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from traceprobe_agent.agent import AgentConfig
from traceprobe_agent.program import ProgramPlan
from traceprobe_api.meta import parse_duration
from traceprobe_api.probe import DEFAULT_PROBES

DEFAULT_KINDS = tuple(p.value for p in DEFAULT_PROBES)  # what a probe without `probes` gets


@dataclass(frozen=True)
class ProbeView:
    kind: str
    namespace: str | None
    name: str
    generation: int
    kinds: frozenset[str]
    node_selector: dict[str, str]
    max_connections: int
    interval_seconds: float
    deleting: bool

    @property
    def ref(self) -> tuple[str, str | None, str]:
        return (self.kind, self.namespace, self.name)


def probe_view(obj: dict[str, Any]) -> ProbeView:
    meta, spec = obj.get("metadata", {}), obj.get("spec") or {}
    limits = spec.get("limits") or {}
    return ProbeView(
        kind=obj.get("kind", "TraceProbe"), namespace=meta.get("namespace"),
        name=meta["name"], generation=int(meta.get("generation") or 1),
        kinds=frozenset(spec.get("probes") or DEFAULT_KINDS),
        node_selector=dict(spec.get("nodeSelector") or {}),
        max_connections=int(limits.get("maxConnections") or 65536),
        interval_seconds=parse_duration(spec.get("interval") or "10s").total_seconds() or 10.0,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def applies(probe: ProbeView, node_labels: dict[str, str]) -> bool:
    return all(node_labels.get(k) == v for k, v in probe.node_selector.items())


def union_config(probes: list[ProbeView]) -> AgentConfig | None:
    """One kernel program serves every live probe: the union of kinds, the largest
    limits, the shortest interval. None when no probe needs this node."""
    live = [p for p in probes if not p.deleting]
    if not live:
        return None
    return AgentConfig(
        kinds=frozenset().union(*(p.kinds for p in live)),
        max_connections=max(p.max_connections for p in live),
        interval_seconds=min(p.interval_seconds for p in live),
    )


# Kernel drop counters that mean a bounded map was full (data lost, not merely unnamed).
FULL_MAP_COUNTERS = {"conn_map_full": "connection map", "edge_map_full": "edge map"}


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


def probe_entry(probe: ProbeView, plan: ProgramPlan | None, programs: list[str],
                map_usage: dict[str, tuple[int, int]], drops: dict[str, int],
                load_error: str | None, full_maps: dict[str, int] | None = None,
                ) -> dict[str, Any]:
    """This probe's entry in the NodeReport status."""
    ref = {"kind": probe.kind, "name": probe.name, "generation": probe.generation}
    if probe.namespace:
        ref["namespace"] = probe.namespace
    entry: dict[str, Any] = {"probe": ref}
    if probe.deleting:
        entry.update(state="Detached", reason="ProbeDeleting",
                     message="programs for this probe are detached")
        return entry
    if load_error or plan is None or not plan.runnable:
        why = load_error or (plan.problem() if plan else "not loaded") or ""
        entry.update(state="Failed", reason="LoadFailed" if load_error else "TracepointMissing",
                     message=why[:1024])
        return entry
    missing = {kind: tps for kind, tps in plan.missing.items() if kind in probe.kinds}
    if missing:
        entry.update(state="Degraded", reason="TracepointMissing", message="; ".join(
            f"{kind} needs {', '.join(tps)}" for kind, tps in sorted(missing.items())))
    elif full_maps:
        what = "; ".join(f"{FULL_MAP_COUNTERS[n]} full: {v} dropped" for n, v in
                         sorted(full_maps.items()))
        entry.update(state="Degraded", reason="MapFull", message=(
            f"{what} (capacity {probe.max_connections}); connections beyond it are not "
            "counted: raise spec.limits.maxConnections")[:1024])
    else:
        entry["state"] = "Attached"
    entry["programsAttached"] = programs[:64]
    entry["mapUsage"] = [{"name": n, "entries": min(u, c), "capacity": c}
                         for n, (u, c) in sorted(map_usage.items())]
    entry["drops"] = {k: v for k, v in sorted(drops.items())}
    return entry
