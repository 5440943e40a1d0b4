"""Records from every node into one set of edges (pure).

A connection between two observed pods is seen twice: by the client's node and
by the server's. Client-side counts are authoritative; a server-side
observation adds counts only for edges no client side reported in the same
window (clients outside the cluster, or on nodes without an agent), so nothing
is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_map.peers import Peer, Resolver

COUNTERS = ("connections", "refused", "timeouts", "resets", "bytes_sent", "bytes_received",
            "retransmits", "rtt_sum_us", "rtt_samples", "duration_sum_ns")


@dataclass(frozen=True)
class EdgeKey:
    src: Peer
    dst: Peer
    port: int | None
    transport: str


@dataclass
class EdgeStats:
    """Counts from the client's point of view: bytes_sent is src → dst."""

    connections: int = 0
    refused: int = 0
    timeouts: int = 0
    resets: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    retransmits: int = 0
    rtt_sum_us: int = 0
    rtt_samples: int = 0
    duration_sum_ns: int = 0
    rtt_max_us: int = 0
    observed_by: set[str] = field(default_factory=set)

    def add(self, r: ConnectionRecord, as_server: bool) -> None:
        self.connections += r.opened
        self.refused += r.refused
        self.timeouts += r.timeouts
        self.resets += r.resets
        # A server's "sent" is the client's "received".
        self.bytes_sent += r.bytes_received if as_server else r.bytes_sent
        self.bytes_received += r.bytes_sent if as_server else r.bytes_received
        self.retransmits += r.retransmits
        self.rtt_sum_us += r.rtt_sum_us
        self.rtt_samples += r.rtt_samples
        self.duration_sum_ns += r.duration_sum_ns
        self.rtt_max_us = max(self.rtt_max_us, r.rtt_max_us)


def _key(r: ConnectionRecord, resolver: Resolver) -> tuple[EdgeKey, bool] | None:
    if r.role is Role.UDP:
        return None  # no peer to draw an edge to
    at = r.interval_end.timestamp()
    me = resolver.local(r.k8s_namespace, r.k8s_workload_kind, r.k8s_workload, r.node)
    other = resolver.remote(r.remote_ip, at)
    if r.role is Role.CLIENT:
        return EdgeKey(me, other, r.remote_port, r.transport), False
    return EdgeKey(other, me, r.local_port, r.transport), True


def merge(records: Iterable[ConnectionRecord], resolver: Resolver) -> dict[EdgeKey, EdgeStats]:
    client_side: dict[EdgeKey, EdgeStats] = {}
    server_side: dict[EdgeKey, EdgeStats] = {}
    for record in records:
        keyed = _key(record, resolver)
        if keyed is None:
            continue
        key, as_server = keyed
        target = server_side if as_server else client_side
        stats = target.setdefault(key, EdgeStats())
        stats.add(record, as_server)
        stats.observed_by.add("server" if as_server else "client")
    edges = dict(client_side)
    for key, stats in server_side.items():
        if key in edges:
            edges[key].observed_by.add("server")
        else:
            edges[key] = stats
    return edges
