"""The service map as served: `/api/map` JSON, the CLI and the web view read this.

Nodes are workloads, Services, nodes and external peers; edges are client →
server with counts over the window and rates per second. Field names are
camelCase on the wire (pydantic aliases), snake_case in Python.

Retransmits and RTT are measured by each side for itself, so an edge carries
both: `retransmitsClientToServer` (sent by the client, counted by its agent) and
`retransmitsServerToClient` (sent by the server), `rttByClient` and `rttByServer`.
A side no agent observed (see `observedBy`) has null there, never a zero that
looks measured: an edge from outside the cluster has server figures only. The
older `retransmits` and `rtt` stay, as both sides together: every retransmit in
either direction, every RTT sample whichever side took it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from traceprobe_api.base import ObservedModel
from traceprobe_map.buckets import EdgeKey
from traceprobe_map.edge_stats import (
    CLIENT_SIDE,
    SERVER_SIDE,
    EdgeStats,
    percentiles,
    split_buckets,
)
from traceprobe_map.peers import Peer
from traceprobe_map.request_tally import RequestSummary, summaries

NO_BUCKETS: Counter[int] = Counter()  # read only
_Count = Annotated[int, Field(ge=0)]
_Rate = Annotated[float, Field(ge=0)]


class MapNode(ObservedModel):
    id: str
    """Stable across refreshes: `<kind>:<namespace>/<name>` or `<kind>:<name>`."""
    kind: str
    """workload, service, node, external or unknown."""
    name: str
    namespace: str | None = None
    workload_kind: str | None = None
    """Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet or Pod."""
    pods: list[str] = Field(default_factory=list)
    """Pods seen on this node's edges in the window (local side of a record)."""
    nodes: list[str] = Field(default_factory=list)
    """Kubernetes nodes those pods ran on."""
    ports: list[int] = Field(default_factory=list)
    """Ports this peer was reached on."""


class Failures(ObservedModel):
    refused: _Count = 0
    timeout: _Count = 0
    reset: _Count = 0

    @property
    def total(self) -> int:
        return self.refused + self.timeout + self.reset


class Rtt(ObservedModel):
    """Smoothed RTT (µs): percentiles of per-record mean srtt, weighted by samples."""

    samples: _Count = 0
    mean_us: _Rate | None = None
    p50_us: _Rate | None = None
    p99_us: _Rate | None = None
    max_us: _Count | None = None


class Backend(ObservedModel):
    """Where a Service edge's attempts really went (kube-proxy DNAT)."""

    id: str
    """A MapNode id (the backend workload)."""
    attempts: _Count
    """backendsFrom conntrack: the edge's attempts kube-proxy sent there (established,
    refused or timed out). From endpoints: the connections that backend's agent accepted."""


class MapEdge(ObservedModel):
    id: str
    """`<source>-><target>:<port>/<transport>`."""
    source: str
    target: str
    port: int | None = None
    transport: str = "tcp"
    connections: _Count = 0
    """Established (reset ones among them)."""
    connections_per_second: _Rate = 0.0
    attempts: _Count = 0
    """Connections tried: established, refused or timed out (EdgeStats.attempts)."""
    attempts_per_second: _Rate = 0.0
    failures: Failures = Field(default_factory=Failures)
    failures_per_second: _Rate = 0.0
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    """failures / attempts: the share of attempts that were refused, timed out or reset."""
    bytes_sent: _Count = 0
    """Client → server."""
    bytes_received: _Count = 0
    """Server → client."""
    bytes_sent_per_second: _Rate = 0.0
    bytes_received_per_second: _Rate = 0.0
    datagrams_sent: _Count = 0
    """UDP: client → server (the socket that sent first is the client)."""
    datagrams_received: _Count = 0
    """UDP: server → client."""
    datagrams_sent_per_second: _Rate = 0.0
    datagrams_received_per_second: _Rate = 0.0
    retransmits: _Count = 0
    """Both directions together: retransmits_client_to_server plus
    retransmits_server_to_client, of the sides observed."""
    retransmits_client_to_server: _Count | None = None
    """Packets the client retransmitted towards the server, as the client's agent counted
    them; None when no client-side agent observed the edge (not measured, not zero)."""
    retransmits_server_to_client: _Count | None = None
    """Packets the server retransmitted towards the client, as the server's agent counted
    them; None when no server-side agent observed the edge."""
    rtt: Rtt = Field(default_factory=Rtt)
    """Every RTT sample of the edge, whichever side measured it (both estimate the
    same round trip)."""
    rtt_by_client: Rtt | None = None
    """The client's smoothed RTT; None when no client-side agent observed the edge."""
    rtt_by_server: Rtt | None = None
    """The server's smoothed RTT; None when no server-side agent observed the edge."""
    backends: list[Backend] = Field(default_factory=list)
    backends_from: Literal["conntrack", "endpoints"] | None = None
    """conntrack: the clients' agents matched each attempt to its DNAT flow, so
    `backends` plus `backendsUnknown` sum to `attempts` in any window, live or closed.
    endpoints (no conntrack on the clients' nodes): each backend's own agent counted what
    it accepted; those reports can fall into a neighbouring bucket, so the parts can
    differ from the edge, most in a live window, by the connections in flight."""
    backends_unknown: _Count | None = None
    """backendsFrom conntrack: attempts whose DNAT flow the agent never saw (an event
    lost, conntrack started late); 0 normally."""
    requests: list[RequestSummary] = Field(default_factory=list)
    """Per protocol (probe kind http): requests, errors and each side's latency."""
    unparsed_connections: dict[str, _Count] = Field(default_factory=dict)
    """Probe kind http: connections seen to be `tls` or `http2` (cleartext, gRPC say),
    whose requests are not parsed: what the map cannot see."""
    observed_by: list[str] = Field(default_factory=list)
    """client, server or both: which sides' agents saw it."""
    probes: list[str] = Field(default_factory=list)
    """Probes (`namespace/name`, or `name` for a ClusterTraceProbe) that observed it."""


class Overflow(ObservedModel):
    """What the cardinality caps folded into overflow buckets during the window."""

    edges: _Count = 0
    externals: _Count = 0


class MapSnapshot(ObservedModel):
    cluster: str
    generated_at: datetime
    window_seconds: float
    nodes: list[MapNode] = Field(default_factory=list)
    edges: list[MapEdge] = Field(default_factory=list)
    overflow: Overflow = Field(default_factory=Overflow)


def node_id(peer: Peer) -> str:
    return f"{peer.kind}:{peer.label}"


def _rtt(samples: int, sum_us: int, max_us: int, histogram: Counter[int]) -> Rtt:
    # Unvalidated: every value is a count or a quotient of counts (never negative), and an
    # edge carries three of these, whose validation would cost a third of a snapshot.
    if not samples:
        return Rtt.model_construct()
    p50, p99 = percentiles(histogram, 0.5, 0.99)
    return Rtt.model_construct(samples=samples, mean_us=sum_us / samples, p50_us=p50,
                               p99_us=p99, max_us=max_us)


def _directions(s: EdgeStats) -> dict[str, Any]:
    """The edge's retransmits and RTT: each side's where observed, and both together."""
    n_client, n_server = s.rtt_samples, s.server_rtt_samples
    # A side without samples has no buckets in the histogram: most edges need no split.
    client, server = (s.rtt_histogram, NO_BUCKETS) if not n_server else \
        split_buckets(s.rtt_histogram)
    by_client = _rtt(n_client, s.rtt_sum_us, s.rtt_max_us, client)
    by_server = _rtt(n_server, s.server_rtt_sum_us, s.server_rtt_max_us, server)
    both = by_client if not n_server else by_server if not n_client else _rtt(
        n_client + n_server, s.rtt_sum_us + s.server_rtt_sum_us,
        max(s.rtt_max_us, s.server_rtt_max_us), client + server)
    seen_client, seen_server = bool(s.observed_by & CLIENT_SIDE), bool(s.observed_by & SERVER_SIDE)
    return {
        "retransmits": s.retransmits + s.server_retransmits,
        "retransmits_client_to_server": s.retransmits if seen_client else None,
        "retransmits_server_to_client": s.server_retransmits if seen_server else None,
        "rtt": both, "rtt_by_client": by_client if seen_client else None,
        "rtt_by_server": by_server if seen_server else None}


def _backends_from(s: EdgeStats) -> Literal["conntrack", "endpoints"] | None:
    if s.conntracked:
        return "conntrack"
    return "endpoints" if s.backends else None


def build_snapshot(edges: dict[EdgeKey, EdgeStats], cluster: str, window_seconds: float,
                   generated_at: datetime, overflow: Overflow | None = None) -> MapSnapshot:
    """The served form of merged edges; rates are per second over the window."""
    per_second = 1.0 / window_seconds if window_seconds > 0 else 0.0
    nodes: dict[str, MapNode] = {}

    def node(peer: Peer, pods: AbstractSet[str], hosts: AbstractSet[str], port: int | None) -> str:
        nid = node_id(peer)
        n = nodes.get(nid)
        if n is None:
            n = nodes[nid] = MapNode(id=nid, kind=peer.kind, name=peer.name,
                                     namespace=peer.namespace, workload_kind=peer.workload_kind)
        n.pods = sorted(set(n.pods) | pods)
        n.nodes = sorted(set(n.nodes) | hosts)
        if port is not None and port not in n.ports:
            n.ports = sorted([*n.ports, port])
        return nid

    out: list[MapEdge] = []
    for key, s in edges.items():
        source = node(key.src, s.src_pods, s.src_nodes, None)
        target = node(key.dst, s.dst_pods, s.dst_nodes, key.port)
        for backend in s.backends:
            node(backend, set(), set(), None)
        attempts = s.attempts
        out.append(MapEdge(
            id=f"{source}->{target}:{key.port if key.port is not None else '*'}/{key.transport}",
            source=source, target=target, port=key.port, transport=key.transport,
            connections=s.connections, connections_per_second=s.connections * per_second,
            attempts=attempts, attempts_per_second=attempts * per_second,
            failures=Failures(refused=s.refused, timeout=s.timeouts, reset=s.resets),
            failures_per_second=s.failures * per_second,
            error_rate=min(1.0, s.failures / attempts) if attempts else 0.0,
            bytes_sent=s.bytes_sent, bytes_received=s.bytes_received,
            bytes_sent_per_second=s.bytes_sent * per_second,
            bytes_received_per_second=s.bytes_received * per_second,
            datagrams_sent=s.datagrams_sent, datagrams_received=s.datagrams_received,
            datagrams_sent_per_second=s.datagrams_sent * per_second,
            datagrams_received_per_second=s.datagrams_received * per_second,
            **_directions(s),
            backends=[Backend(id=node_id(p), attempts=n)
                      for p, n in sorted(s.backends.items(), key=lambda kv: -kv[1])],
            backends_from=_backends_from(s),
            backends_unknown=max(0, attempts - sum(s.backends.values())) if s.conntracked
            else None,
            requests=summaries(s.requests, per_second),
            unparsed_connections=s.requests.unparsed_connections() if s.requests else {},
            observed_by=sorted(s.observed_by), probes=sorted(s.probes)))
    out.sort(key=lambda e: (-e.attempts, e.id))
    return MapSnapshot(cluster=cluster, generated_at=generated_at, window_seconds=window_seconds,
                       nodes=sorted(nodes.values(), key=lambda n: n.id), edges=out,
                       overflow=overflow or Overflow())
