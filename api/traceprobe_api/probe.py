"""TraceProbe (namespaced, for app teams) and ClusterTraceProbe (cluster-wide, for platform teams).

Both share one spec; the cluster kind adds `namespaceSelector`. A TraceProbe only
ever observes pods of its own namespace, so a team whose RBAC stops at its
namespace can use it without seeing anyone else's traffic (the Tetragon
TracingPolicy / TracingPolicyNamespaced split).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from traceprobe_api.base import (
    AGE_COLUMN,
    ApiModel,
    CrdInfo,
    ObservedModel,
    PrinterColumn,
    Resource,
    default_object,
)
from traceprobe_api.cel import LIST_SET, Rule
from traceprobe_api.meta import (
    DURATION_PATTERN,
    Conditions,
    LabelMap,
    LabelSelector,
    parse_duration,
)


class Probe(StrEnum):
    """What the node agents observe."""

    CONNECTIONS = "connections"  # TCP connection lifecycle: open, close, duration
    FAILURES = "failures"  # refused, reset and timed-out connections
    BYTES = "bytes"  # bytes sent and received per connection
    RETRANSMITS = "retransmits"  # TCP retransmitted segments
    RTT = "rtt"  # smoothed round-trip time
    UDP = "udp"  # UDP flows (off by default: chatty, and no connection state to join on)
    DNS = "dns"  # DNS answers received name external peers (only DNS responses are read)
    HTTP = "http"  # HTTP/1.x requests: method, status and latency (sock_ops core only)
    GRPC = "grpc"  # cleartext HTTP/2: gRPC calls by status, other HTTP/2 as http (sock_ops)
    POSTGRES = "postgres"  # PostgreSQL statements: operation, SQLSTATE, latency (sock_ops)
    REDIS = "redis"  # Redis commands: command, error replies, latency (sock_ops core only)


DEFAULT_PROBES = [Probe.CONNECTIONS, Probe.FAILURES, Probe.BYTES, Probe.RETRANSMITS, Probe.RTT,
                  Probe.DNS]
ALL_KINDS: tuple[str, ...] = tuple(p.value for p in Probe)
"""Every probe kind's name, as the agent's flags and programs spell them."""
DEFAULT_KINDS: tuple[str, ...] = tuple(p.value for p in DEFAULT_PROBES)
"""What a probe without `probes` observes."""
MIN_INTERVAL_SECONDS = 1
MAX_INTERVAL_SECONDS = 300


def _interval_in_bounds(text: str) -> bool:
    # A malformed duration is the pattern's error to report, not this rule's.
    return (re.fullmatch(DURATION_PATTERN, text) is None
            or MIN_INTERVAL_SECONDS <= parse_duration(text).total_seconds()
            <= MAX_INTERVAL_SECONDS)


Interval = Annotated[str, Field(max_length=32, pattern=DURATION_PATTERN), Rule(
    f"!self.matches('{DURATION_PATTERN}')"
    " || (duration(self) >= duration('1s') && duration(self) <= duration('5m'))",
    "interval must be between 1s and 5m",
    _interval_in_bounds)]


class Limits(ApiModel):
    """Caps that bound each agent's memory and CPU use."""

    max_connections: Annotated[int, Field(ge=1024, le=10_000_000)] = 65536
    """Connections tracked at once per node (kernel map size); beyond it, drops are counted.
    A TraceProbe's is clamped to the largest ClusterTraceProbe's (else 65536), which its
    NodeReport entry says (LimitClamped)."""


class TraceProbeSpec(ApiModel):
    """What to observe. Export is cluster-wide (the service map's), not per probe."""

    probes: Annotated[list[Probe], Field(min_length=1, max_length=len(Probe)), LIST_SET] = Field(
        default_factory=lambda: list(DEFAULT_PROBES),
        json_schema_extra={"default": [p.value for p in DEFAULT_PROBES]})
    """Which probes to attach."""
    pod_selector: LabelSelector = default_object(LabelSelector)
    """Pods to observe; `{}` (the default) selects every pod."""
    node_selector: LabelMap | None = None
    """Only nodes with all these labels run the probe; absent means every node."""
    interval: Interval = "10s"
    """How often in-kernel aggregates are drained and exported (1s to 5m)."""
    limits: Limits = default_object(Limits)
    """Per-node resource limits."""


class ClusterTraceProbeSpec(TraceProbeSpec):
    """What to observe across namespaces. Export is cluster-wide, not per probe."""

    namespace_selector: LabelSelector = default_object(LabelSelector)
    """Namespaces whose pods are observed; `{}` (the default) selects every namespace."""
    host_processes: bool = False
    """Also observe the node's processes that belong to no pod (kubelet, containerd, the
    node's own daemons). Off by default: a pod's traffic with them is still seen from
    the pod's side."""


class ConditionType(StrEnum):
    """Condition types the operator sets on probes."""

    ACCEPTED = "Accepted"  # the spec passed the checks the schema cannot express
    READY = "Ready"  # every selected node runs the probe
    DEGRADED = "Degraded"  # some nodes run it only partly or not at all


class NodeCounts(ObservedModel):
    """Nodes this probe applies to, summarised from the per-node NodeReports."""

    desired: Annotated[int, Field(ge=0)] = 0
    """Nodes selected by the probe."""
    ready: Annotated[int, Field(ge=0)] = 0
    """Nodes whose agent reports the probe Attached."""
    failed: Annotated[int, Field(ge=0)] = 0
    """Nodes whose agent reports the probe Failed."""


class TraceProbeStatus(ObservedModel):
    """Observed state, written by the operator. Per-node detail lives in NodeReports."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `.metadata.generation` this status describes."""
    conditions: Conditions | None = None
    """Accepted, Ready, Degraded."""
    nodes: NodeCounts | None = None
    """Node counts."""
    nodes_ready: Annotated[str, Field(max_length=32, pattern="^[0-9]+/[0-9]+$")] | None = None
    """`ready/desired`, for `kubectl get`."""


_PROBE_COLUMNS = (
    PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status',
                  "Whether every selected node runs the probe"),
    PrinterColumn("Nodes", "string", ".status.nodesReady", "Ready nodes / selected nodes"),
    PrinterColumn("Interval", "string", ".spec.interval", "Aggregation interval", priority=1),
    AGE_COLUMN,
)


class TraceProbe(Resource):
    """Observes the TCP/UDP traffic of pods in its own namespace."""

    crd: ClassVar[CrdInfo] = CrdInfo("traceprobes", "traceprobe", "Namespaced", ("tp",),
                                     _PROBE_COLUMNS)

    kind: Literal["TraceProbe"] = "TraceProbe"
    spec: TraceProbeSpec = default_object(TraceProbeSpec)
    status: TraceProbeStatus | None = None


class ClusterTraceProbe(Resource):
    """Observes the TCP/UDP traffic of pods in the namespaces it selects."""

    crd: ClassVar[CrdInfo] = CrdInfo("clustertraceprobes", "clustertraceprobe", "Cluster",
                                     ("ctp",), _PROBE_COLUMNS)

    kind: Literal["ClusterTraceProbe"] = "ClusterTraceProbe"
    spec: ClusterTraceProbeSpec = default_object(ClusterTraceProbeSpec)
    status: TraceProbeStatus | None = None
