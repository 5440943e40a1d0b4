"""Records from every node into one set of edges, each connection counted once (pure).

A connection between two observed pods is seen twice: by the client's node and
by the server's. Client-side counts are authoritative; a server-side
observation is kept only when no client side accounts for it:
- the same edge was reported by the client (now or recently: agents' intervals
  are not aligned, so one side may land in the next window);
- the client connected to a Service and conntrack (in the client's record) or
  the Service's EndpointSlices name this server as the backend: the counts
  stay on the client → Service edge, with the backend in its breakdown.
What remains are clients without an agent (outside the cluster, unprobed nodes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.peers import Peer, Resolver

OVERFLOW_PEER = Peer("overflow", "overflow")
ProbeMatcher = Callable[[ConnectionRecord], Iterable[str]]


@dataclass(frozen=True)
class EdgeKey:
    src: Peer
    dst: Peer
    port: int | None
    transport: str


@dataclass
class MergeResult:
    edges: dict[EdgeKey, EdgeStats] = field(default_factory=dict)
    udp_records: int = 0  # no peer visible to tracepoints: not drawn
    overflowed_edges: int = 0  # folded into the overflow edge by the cap


def _backend_peer(resolver: Resolver, address: str, at: float) -> Peer:
    ip = address.rsplit(":", 1)[0].strip("[]")
    return resolver.remote(ip, at)


def merge(records: Iterable[ConnectionRecord], resolver: Resolver,
          recent_client_keys: set[EdgeKey] | None = None,
          probes_of: ProbeMatcher | None = None, max_edges: int = 50_000) -> MergeResult:
    result = MergeResult()
    client: dict[EdgeKey, EdgeStats] = {}
    server: dict[EdgeKey, EdgeStats] = {}
    # (client peer, backend peer) pairs conntrack accounted for: key -> Service edge
    via_service: dict[tuple[Peer, Peer], EdgeKey] = {}
    server_at: dict[EdgeKey, float] = {}
    conntracked: set[EdgeKey] = set()  # Service edges whose backends conntrack named
    for r in records:
        if r.role is Role.UDP:
            result.udp_records += 1
            continue
        at = r.interval_end.timestamp()
        me = resolver.local(r.k8s_namespace, r.k8s_workload_kind, r.k8s_workload, r.node)
        other = resolver.remote(r.remote_ip, at)
        if r.role is Role.CLIENT:
            key = EdgeKey(me, other, r.remote_port, r.transport)
            stats = client.setdefault(key, EdgeStats())
            if r.backends:
                conntracked.add(key)
            for address, n in r.backends.items():
                backend = _backend_peer(resolver, address, at)
                stats.backends[backend] += n
                via_service[(me, backend)] = key
        else:
            key = EdgeKey(other, me, r.local_port, r.transport)
            stats = server.setdefault(key, EdgeStats())
            server_at[key] = at
        stats.add(r, as_server=r.role is Role.SERVER)
        if probes_of is not None:
            stats.probes.update(probes_of(r))
    edges = result.edges
    edges.update(client)
    service_edges: dict[Peer, list[EdgeKey]] = {}
    for key in client:
        if key.dst.kind == "service":
            service_edges.setdefault(key.src, []).append(key)
    for key, stats in server.items():
        target = _accounted_by(key, server_at[key], client, via_service, service_edges,
                               conntracked, resolver, recent_client_keys)
        if target is None:
            edges[key] = stats
            continue
        if target.dst.kind == "service" and target in client and target not in conntracked:
            # EndpointSlice fallback (no conntrack): the server side tells the split.
            client[target].backends[key.dst] += stats.connections
        mine = edges.get(target)
        if mine is not None:
            mine.merge_sides(stats)
    if len(edges) > max_edges:
        result.overflowed_edges = _cap(edges, max_edges)
    return result


def _accounted_by(key: EdgeKey, at: float, client: dict[EdgeKey, EdgeStats],
                  via_service: dict[tuple[Peer, Peer], EdgeKey],
                  service_edges: dict[Peer, list[EdgeKey]], conntracked: set[EdgeKey],
                  resolver: Resolver,
                  recent_client_keys: set[EdgeKey] | None) -> EdgeKey | None:
    """The client-side edge that already counts this server-side one, if any."""
    if key in client:
        return key
    if (key.src, key.dst) in via_service:
        return via_service[(key.src, key.dst)]
    for service_key in service_edges.get(key.src, ()):
        if service_key not in conntracked and key.dst in resolver.backends_of(
                service_key.dst, at):
            return service_key
    if recent_client_keys is not None and key in recent_client_keys:
        return key  # counted in a neighbouring window
    if key.src.kind == "node":
        # A hostNetwork client's address is its node's: the server sees the node,
        # the client's own agent named the pod. Same server and port, same node.
        for client_key, stats in client.items():
            if (client_key.dst, client_key.port) == (key.dst, key.port) and \
                    key.src.name in stats.src_nodes:
                return client_key
    return None


def _cap(edges: dict[EdgeKey, EdgeStats], max_edges: int) -> int:
    """Keep the busiest edges, fold the rest into one overflow edge; return how many."""
    ranked = sorted(edges, key=lambda k: (edges[k].connections + edges[k].failures,
                                          edges[k].bytes_sent + edges[k].bytes_received),
                    reverse=True)
    folded = EdgeStats()
    dropped = ranked[max_edges - 1:]
    for key in dropped:
        folded.absorb(edges.pop(key))
    edges[EdgeKey(OVERFLOW_PEER, OVERFLOW_PEER, None, "tcp")] = folded
    return len(dropped)
