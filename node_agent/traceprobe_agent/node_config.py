"""Which probes apply to this node and the one configuration that serves them all
(pure; how each probe's state is reported is probe_reports.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from traceprobe_agent.agent import AgentConfig
from traceprobe_api.meta import parse_duration
from traceprobe_api.probe import DEFAULT_KINDS


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
    pod_selector: dict[str, Any] = field(default_factory=dict)
    # None for a namespaced TraceProbe: it observes its own namespace only.
    namespace_selector: dict[str, Any] | None = None
    host_processes: bool = False  # processes in no pod (cluster-scoped probes only)

    @property
    def ref(self) -> tuple[str, str | None, str]:
        return (self.kind, self.namespace, self.name)


def probe_view(obj: dict[str, Any]) -> ProbeView:
    meta, spec = obj.get("metadata", {}), obj.get("spec") or {}
    limits = spec.get("limits") or {}
    kind = obj.get("kind", "TraceProbe")
    cluster = kind == "ClusterTraceProbe"
    return ProbeView(
        kind=kind, namespace=meta.get("namespace"),
        name=meta["name"], generation=int(meta.get("generation") or 1),
        kinds=frozenset(spec.get("probes") or DEFAULT_KINDS),
        node_selector=dict(spec.get("nodeSelector") or {}),
        max_connections=int(limits.get("maxConnections") or 65536),
        interval_seconds=parse_duration(spec.get("interval") or "10s").total_seconds() or 10.0,
        deleting=bool(meta.get("deletionTimestamp")),
        pod_selector=dict(spec.get("podSelector") or {}),
        namespace_selector=dict(spec.get("namespaceSelector") or {}) if cluster else None,
        host_processes=cluster and bool(spec.get("hostProcesses")),
    )


def applies(probe: ProbeView, node_labels: dict[str, str]) -> bool:
    return all(node_labels.get(k) == v for k, v in probe.node_selector.items())


# What a namespaced probe may ask of a node's kernel maps unless a cluster-scoped
# probe (a platform team's) sets the node higher: an app team's probe must not size
# every node's maps for the whole cluster.
NAMESPACED_MAX_CONNECTIONS = 65536


def connections_ceiling(probes: list[ProbeView]) -> int:
    """The most connections a namespaced probe on this node may have tracked."""
    return max([p.max_connections for p in probes
                if p.namespace_selector is not None and not p.deleting],
               default=NAMESPACED_MAX_CONNECTIONS)


def max_connections(probe: ProbeView, ceiling: int) -> int:
    """`probe`'s limit as this node applies it: a namespaced probe's is clamped."""
    if probe.namespace_selector is not None:
        return probe.max_connections
    return min(probe.max_connections, ceiling)


def union_config(probes: list[ProbeView]) -> AgentConfig | None:
    """One kernel program serves every live probe: the union of kinds, the largest
    limits (a namespaced probe's clamped to the ceiling), the shortest interval. None
    when no probe needs this node."""
    live = [p for p in probes if not p.deleting]
    if not live:
        return None
    ceiling = connections_ceiling(live)
    return AgentConfig(
        kinds=frozenset().union(*(p.kinds for p in live)),
        max_connections=max(max_connections(p, ceiling) for p in live),
        interval_seconds=min(p.interval_seconds for p in live),
    )
