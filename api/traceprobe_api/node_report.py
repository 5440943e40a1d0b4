"""NodeReport: what one node's agent found and did, one object per node.

Agents write it (named after their node), the operator reads and summarises it
into the probes' status. Per-node detail lives here rather than in a probe's
status so that status stays small however many nodes there are, and each agent
writes only its own object.
"""

from __future__ import annotations

from datetime import datetime
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
)
from traceprobe_api.cel import LIST_ATOMIC, LIST_SET, KubeList, Rule
from traceprobe_api.meta import Conditions, DnsSubdomain, Reason

_ShortText = Annotated[str, Field(max_length=256)]
_Counter = Annotated[int, Field(ge=0)]


class ProbeKind(StrEnum):
    """The kind of probe a report entry refers to."""

    TRACE_PROBE = "TraceProbe"
    CLUSTER_TRACE_PROBE = "ClusterTraceProbe"


class ProbeRef(ObservedModel):
    """The probe (and the generation of its spec) an entry reports on."""

    cel_rules = (
        Rule("self.kind == 'TraceProbe' ? has(self.__namespace__) : !has(self.__namespace__)",
             "namespace is required for a TraceProbe and forbidden for a ClusterTraceProbe",
             lambda ref: (ref.namespace is not None) == (ref.kind == ProbeKind.TRACE_PROBE),
             field_path=".namespace"),
    )

    kind: ProbeKind
    """TraceProbe or ClusterTraceProbe."""
    namespace: DnsSubdomain | None = None
    """Namespace of a TraceProbe; absent for a ClusterTraceProbe."""
    name: DnsSubdomain
    """Name of the probe."""
    generation: Annotated[int, Field(ge=1)]
    """The probe's `.metadata.generation` the agent has applied."""


class ProbeState(StrEnum):
    """How far a probe got on this node."""

    ATTACHED = "Attached"  # every requested probe's programs run
    DEGRADED = "Degraded"  # some programs run; `reason` says what is missing
    FAILED = "Failed"  # nothing runs
    DETACHED = "Detached"  # removed from the kernel (probe deleted or node deselected)


class ConnectionCore(StrEnum):
    """The BPF programs counting connections on a node."""

    SOCK_OPS = "sock_ops"
    TRACEPOINT = "tracepoint"


class MapUsage(ObservedModel):
    """Fill level of one BPF map."""

    cel_rules = (
        Rule("self.entries <= self.capacity", "entries cannot exceed capacity",
             lambda usage: usage.entries <= usage.capacity, field_path=".entries"),
    )

    name: Annotated[str, Field(min_length=1, max_length=64)]
    """Map name as in the BPF source."""
    entries: _Counter
    """Entries in use when last sampled."""
    capacity: Annotated[int, Field(ge=1)]
    """Maximum entries."""


class ProbeReport(ObservedModel):
    """The state of one probe on this node."""

    probe: ProbeRef
    """Which probe, and which generation of it."""
    state: ProbeState
    """Attached, Degraded, Failed or Detached."""
    programs_attached: Annotated[list[_ShortText], Field(max_length=64), LIST_SET] | None = None
    """BPF programs attached for this probe (e.g. `tracepoint/sock/inet_sock_set_state`)."""
    reason: Reason | None = None
    """CamelCase cause when not Attached, e.g. `TracepointMissing`."""
    message: Annotated[str, Field(max_length=1024)] | None = None
    """Human-readable detail."""
    map_usage: Annotated[
        list[MapUsage], Field(max_length=32), KubeList("map", ("name",))] | None = None
    """Fill level of this probe's BPF maps."""
    drops: Annotated[dict[str, _Counter], Field(max_length=32)] | None = None
    """Events or entries lost, by cause (e.g. `mapFull`, `ringBufferFull`); counters."""


class NodeReportSpec(ApiModel):
    """Which node this report is about."""

    node_name: DnsSubdomain
    """Name of the node; must equal the NodeReport's own name."""


class NodeReportStatus(ObservedModel):
    """What the agent on this node found and did."""

    agent_version: _ShortText | None = None
    """Version of the node agent."""
    kernel_release: _ShortText | None = None
    """`uname -r` of the node."""
    kernel_features: Annotated[dict[str, bool], Field(max_length=64)] | None = None
    """Kernel features probed, e.g. `tracepoint:sock:inet_sock_set_state: true`."""
    header_source: Annotated[str, Field(max_length=4096)] | None = None
    """Where BCC found kernel headers (a path, or `kheaders`); empty when none were found."""
    heartbeat_time: datetime | None = None
    """When the agent last wrote this report; a stale heartbeat means a dead agent."""
    conditions: Conditions | None = None
    """Conditions of the agent itself (e.g. Ready)."""
    probes: Annotated[list[ProbeReport], Field(max_length=512), LIST_ATOMIC] | None = None
    """One entry per probe that applies to this node."""
    probes_attached: Annotated[str, Field(max_length=32, pattern="^[0-9]+/[0-9]+$")] | None = None
    """`attached/total` probes, for `kubectl get`."""
    connection_core: ConnectionCore | None = None
    """Which connection core runs: `sock_ops` (cgroup v2 socket programs and the kernel's
    own TCP counters) or `tracepoint` (where those do not load, or it was asked for)."""
    connection_core_reason: _ShortText | None = None
    """Why the tracepoint core runs instead of the sock_ops core."""


class NodeReport(Resource):
    """Per-node report of a traceprobe agent; named after its node."""

    crd: ClassVar[CrdInfo] = CrdInfo("nodereports", "nodereport", "Cluster", ("tpnr",), (
        PrinterColumn("Node", "string", ".spec.nodeName", "Node the report is about"),
        PrinterColumn("Probes", "string", ".status.probesAttached", "Attached / applicable"),
        PrinterColumn("Agent", "string", ".status.agentVersion", "Agent version", priority=1),
        PrinterColumn("Kernel", "string", ".status.kernelRelease", "Kernel release",
                      priority=1),
        PrinterColumn("Core", "string", ".status.connectionCore", "Connection core",
                      priority=1),
        PrinterColumn("Heartbeat", "date", ".status.heartbeatTime", "Time since last report"),
        AGE_COLUMN,
    ))
    cel_rules = (
        Rule("self.metadata.name == self.spec.nodeName",
             "metadata.name must equal spec.nodeName: a NodeReport is named after its node",
             lambda report: report.metadata.name == report.spec.node_name,
             field_path=".spec.nodeName"),
    )

    kind: Literal["NodeReport"] = "NodeReport"
    spec: NodeReportSpec
    status: NodeReportStatus | None = None
