"""Records from every node into one set of edges, each connection counted once (pure).

Two steps, so a bucket's records never have to be kept: `fold` adds records to
a bucket's client- and server-side stats as they arrive; `finish` then decides
which server-side observations are new. Client-side counts are authoritative;
a server-side observation is kept only when no client side accounts for it, and
otherwise adds to that client's edge only what the server alone measures: its
retransmits (server → client) and its RTT (the rules: server_sides.py):
- the same edge was reported by the client (in this bucket or a neighbouring one,
  before or after: agents' intervals are not aligned);
- the client connected to a Service and conntrack (in the client's record) or
  the Service's EndpointSlices name this server as the backend: the counts
  stay on the client → Service edge, with the backend in its breakdown;
- the client is a hostNetwork pod, which the server sees as its node.
What remains are clients without an agent (outside the cluster, unprobed nodes).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from math import log2
from sys import intern

from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_map.buckets import OVERFLOW_PEER, EdgeKey, MergeResult, Partial, Recent
from traceprobe_map.edge_stats import (
    CLIENT_SIDE,
    NO_NAMES,
    RTT_STEPS,
    SERVER_SIDE,
    EdgeStats,
    Names,
    names_of,
    names_union,
    names_with,
)
from traceprobe_map.peers import Peer, Resolver
from traceprobe_map.server_sides import Lookups, counted_by

ProbeMatcher = Callable[[ConnectionRecord], Iterable[str]]


def _backend_peer(resolver: Resolver, address: str, at: float) -> Peer:
    ip = address.rsplit(":", 1)[0].strip("[]")
    return resolver.remote(ip, at)


def fold(records: Iterable[ConnectionRecord], resolver: Resolver,
         probes_of: ProbeMatcher | None = None, into: Partial | None = None) -> Partial:
    """Name both ends of each record (at the record's time) and add its counts.

    The hottest loop of the map (every record of every node passes here once), so
    the per-record work is written out inline rather than in EdgeStats methods."""
    part = into if into is not None else Partial()
    client, server, server_at = part.client, part.server, part.server_at
    # Per pod (its UID; else its names), within this batch: the local peer, the pod's
    # label and its probes. Local sides repeat and resolve without side effects.
    locals_: dict[object, tuple[Peer, str, Names]] = {}
    stamps: dict[datetime, float] = {}  # a batch's records share a few interval ends
    remote = resolver.remote
    udp, client_role = Role.UDP, Role.CLIENT
    seen = 0
    for r in records:
        seen += 1
        # Field reads from the model's dict: pydantic routes attribute reads through a
        # __getattr__ hook (~3x a dict read), and this loop reads twenty per record.
        f = r.__dict__
        role = f["role"]
        if role is udp:
            part.udp_records += 1
            continue
        end = f["interval_end"]
        at = stamps.get(end)
        if at is None:
            at = stamps[end] = end.timestamp()
        local_key = f["k8s_pod_uid"] or (r.k8s_namespace, r.k8s_workload_kind, r.k8s_workload,
                                          r.node, r.k8s_pod)
        local = locals_.get(local_key)
        if local is None:
            label = intern(f"{r.k8s_namespace}/{r.k8s_pod}") if r.k8s_pod and \
                r.k8s_namespace else ""
            local = locals_[local_key] = (
                resolver.local(r.k8s_namespace, r.k8s_workload_kind, r.k8s_workload, r.node),
                label, names_of(probes_of(r)) if probes_of is not None else NO_NAMES)
        me, pod, probes = local
        remote_ip = f["remote_ip"]
        if remote_ip and (remote_ip.startswith("127.") or remote_ip == "::1"):
            part.loopback_records += 1
            continue
        # The agent knows its node's own addresses (a CNI gateway, say), which the
        # Node object need not list: such a peer is that node.
        earlier = None
        if f["remote_on_node"]:
            other = resolver.local(None, None, None, f["node"])
        else:
            # Named by who held the address when the connections opened (the span the
            # agent measured), not at the interval's end: pod IPs are reused.
            until, since = f["active_until"], f["active_from"]
            if until is not None:
                at = min(until.timestamp(), at)
            other = remote(remote_ip, at)
            if since is not None and since != until:
                first = remote(remote_ip, min(since.timestamp(), at))
                if first != other:  # the address changed owner inside the span
                    earlier = first
                    part.reused_address_records += 1
        dns_name = f["remote_dns_name"]
        if dns_name and other.kind == "external":
            other = resolver.external_named(dns_name)
        node = f["node"]
        if role is client_role:
            key = (me, other, f["remote_port"], f["transport"])
            stats = client.get(key)  # type: ignore[call-overload]  # equal to its EdgeKey
            if stats is None:
                if len(client) + len(server) >= part.max_keys:
                    part.dropped_records += 1
                    continue
                key = EdgeKey(*key)
                stats = client[key] = EdgeStats(observed_by=CLIENT_SIDE)
            stats.bytes_sent += f["bytes_sent"]
            stats.bytes_received += f["bytes_received"]
            if f["transport"] == "udp":
                stats.datagrams_sent += f["datagrams_sent"]
                stats.datagrams_received += f["datagrams_received"]
            if node not in stats.src_nodes:
                stats.src_nodes = names_with(stats.src_nodes, node)
            if pod and pod not in stats.src_pods:
                stats.src_pods = names_with(stats.src_pods, pod)
            if f["backends"]:
                edge = EdgeKey(*key)
                part.conntracked.add(edge)
                stats.conntracked += 1
                for address, n in f["backends"].items():
                    backend = _backend_peer(resolver, address, at)
                    stats.backends[backend] += n
                    part.via_service[(me, backend)] = edge
            # Retransmits and RTT are each side's own: the client's go to its fields.
            retransmits = f["retransmits"]
            if retransmits:  # usually 0
                stats.retransmits += retransmits
            rtt_sum = f["rtt_sum_us"]
            stats.rtt_sum_us += rtt_sum
            if f["rtt_max_us"] > stats.rtt_max_us:
                stats.rtt_max_us = f["rtt_max_us"]
            samples = f["rtt_samples"]
            if samples:
                stats.rtt_samples += samples
                mean = rtt_sum / samples
                stats.rtt_histogram[int(log2(mean if mean > 1.0 else 1.0) * RTT_STEPS)] += \
                    samples
        else:
            key = (other, me, f["local_port"], f["transport"])
            stats = server.get(key)  # type: ignore[call-overload]
            if stats is None:
                if len(client) + len(server) >= part.max_keys:
                    part.dropped_records += 1
                    continue
                key = EdgeKey(*key)
                stats = server[key] = EdgeStats(observed_by=SERVER_SIDE)
            # A server's "sent" is the client's "received".
            stats.bytes_sent += f["bytes_received"]
            stats.bytes_received += f["bytes_sent"]
            if f["transport"] == "udp":
                stats.datagrams_sent += f["datagrams_received"]
                stats.datagrams_received += f["datagrams_sent"]
            if node not in stats.dst_nodes:
                stats.dst_nodes = names_with(stats.dst_nodes, node)
            if pod and pod not in stats.dst_pods:
                stats.dst_pods = names_with(stats.dst_pods, pod)
            server_at[key] = at  # type: ignore[index]
            if earlier is not None:
                # Which of the owners connected is for the client sides to tell (finish).
                owners = part.earlier_owners.setdefault(key, [])  # type: ignore[arg-type]
                if earlier not in owners:
                    owners.append(earlier)
            retransmits = f["retransmits"]
            if retransmits:
                stats.server_retransmits += retransmits
            rtt_sum = f["rtt_sum_us"]
            stats.server_rtt_sum_us += rtt_sum
            if f["rtt_max_us"] > stats.server_rtt_max_us:
                stats.server_rtt_max_us = f["rtt_max_us"]
            samples = f["rtt_samples"]
            if samples:
                stats.server_rtt_samples += samples
                mean = rtt_sum / samples
                # edge_stats.server_bucket, inline: the server's side of the histogram.
                stats.rtt_histogram[
                    -1 - int(log2(mean if mean > 1.0 else 1.0) * RTT_STEPS)] += samples
        stats.connections += f["opened"]
        if f["refused"] or f["timeouts"] or f["resets"]:  # usually 0
            stats.refused += f["refused"]
            stats.timeouts += f["timeouts"]
            stats.resets += f["resets"]
        stats.duration_sum_ns += f["duration_sum_ns"]
        if f["requests"] or f["unparsed"]:  # usually neither
            side = "client" if role is client_role else "server"
            if f["requests"]:
                stats.tally().add_rows(side, f["requests"])
            if f["unparsed"]:
                stats.tally().add_unparsed(side, f["unparsed"])
        if probes and probes is not stats.probes:
            stats.probes = names_union(stats.probes, probes)
    part.records += seen
    return part


def finish(part: Partial, resolver: Resolver, recent: Recent | None = None,
           max_edges: int = 50_000) -> MergeResult:
    """The bucket's edges. `part` is left as it was (an open bucket can be shown
    now and folded into later): stats that change are copies."""
    result = MergeResult(udp_records=part.udp_records, loopback_records=part.loopback_records,
                         reused_address_records=part.reused_address_records)
    edges = result.edges
    edges.update(part.client)
    owned: set[EdgeKey] = set()
    carried: set[EdgeKey] = set()

    def own(key: EdgeKey) -> EdgeStats:
        if key not in owned:
            copy = EdgeStats()
            copy.absorb(edges[key])
            edges[key] = copy
            owned.add(key)
        return edges[key]

    def counted_on(target: EdgeKey, server: EdgeStats) -> EdgeStats:
        """The client edge that counts `server`, now marked as seen by it too."""
        if target not in edges:
            # Counted in a neighbouring window: here only who saw it, and where, joins
            # (and the server's latency: its requests were counted with the client's).
            edges[target] = EdgeStats()
            owned.add(target)
            carried.add(target)
            if server.requests:
                edges[target].tally().client_elsewhere = True
        mine = own(target)
        mine.merge_sides(server)
        return mine

    lookups = Lookups(part, resolver)
    for key, stats, at, earlier in _server_sides(part, resolver):
        targets = [counted_by(key, at, part, lookups, recent)]
        # The client's address changed owner inside the record's span: every owner
        # whose client side counted these connections saw this server; the server's
        # own figures go to the latest of them (they cannot be split by owner).
        for owner in earlier:
            targets.append(counted_by(key._replace(src=owner), at, part, lookups, recent))
        found = list(dict.fromkeys(t for t in targets if t is not None))
        if not found:
            if key in edges:  # two addresses of one peer, one of them named late
                own(key).absorb(stats)
            else:
                edges[key] = stats
            continue
        for target in found[1:]:
            counted_on(target, stats)
        target = found[0]
        mine = counted_on(target, stats)
        if target.dst.kind == "service" and target not in part.conntracked and \
                target not in carried:
            # EndpointSlice fallback (no conntrack): the server side tells the split.
            mine.backends[key.dst] += stats.connections
        # The client counted the connections; what the server alone measures joins.
        mine.add_server_side(stats)
    if len(edges) > max_edges:
        result.overflowed_edges = _cap(edges, max_edges)
    return result


def _server_sides(part: Partial, resolver: Resolver
                  ) -> Iterator[tuple[EdgeKey, EdgeStats, float, list[Peer]]]:
    """The bucket's server sides, each with its time and the client address's earlier
    owners inside the records' spans. A client the map could not name when the record
    came in is named again now, at the record's time: the watch event of a pod can come
    seconds after its first connections (a Job's pod that ran for one second, the API
    server under load)."""
    for key, stats in part.server.items():
        at = part.server_at[key]
        earlier = part.earlier_owners.get(key, [])
        src = key.src
        if src.kind == "external" and _is_address(src.name):
            named = resolver.remote(src.name, at)
            if named.kind != "external":
                key = EdgeKey(named, key.dst, key.port, key.transport)
        yield key, stats, at, earlier


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def merge(records: Iterable[ConnectionRecord], resolver: Resolver,
          recent: Recent | None = None,
          probes_of: ProbeMatcher | None = None, max_edges: int = 50_000) -> MergeResult:
    """fold + finish of one batch of records."""
    return finish(fold(records, resolver, probes_of), resolver, recent, max_edges)


def _cap(edges: dict[EdgeKey, EdgeStats], max_edges: int) -> int:
    """Keep the busiest edges, fold the rest into one overflow edge; return how many."""
    ranked = sorted(edges, key=lambda k: (edges[k].attempts,
                                          edges[k].bytes_sent + edges[k].bytes_received),
                    reverse=True)
    folded = EdgeStats()
    dropped = ranked[max_edges - 1:]
    for key in dropped:
        folded.absorb(edges.pop(key))
    edges[EdgeKey(OVERFLOW_PEER, OVERFLOW_PEER, None, "tcp")] = folded
    return len(dropped)
