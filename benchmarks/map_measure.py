"""The service-map scale benchmark's measurements, each with its floor from the same run.

Times are CPU seconds of this process (`time.process_time`, one thread: per core),
wall-clock beside them; the garbage collector runs as in the map, after a
collection before each timed step. Memory: see map_memory, and VmRSS.
"""

from __future__ import annotations

import gc
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from benchmarks.map_cluster import T0, pod_object
from benchmarks.map_memory import WindowMemory, window_memory
from benchmarks.map_scenario import BUCKET, Interval, Scenario
from traceprobe_agent.pod_cgroups import pod_uid
from traceprobe_agent.pod_index import PodIndex, pod_info
from traceprobe_api.record_otlp import decode, encode
from traceprobe_api.records import ConnectionRecord
from traceprobe_map.buckets import EdgeKey, MergeResult, Recent
from traceprobe_map.merge import merge
from traceprobe_map.metadata import MetadataCache
from traceprobe_map.peers import Peer, Resolver
from traceprobe_map.window import MapWindow

MB = 1e6
LATENESS = 15.0  # the map's defaults: 10 s buckets, 15 s lateness


@dataclass
class Samples:
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        ordered = sorted(self.cpu)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def timed(self, fn: Callable[[], Any]) -> Any:
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        out = fn()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)
        return out


def ratios(measured: Samples, floor: Samples) -> float:
    """Median of the paired per-repeat ratios (runs interleaved)."""
    return median(m / f for m, f in zip(measured.cpu, floor.cpu, strict=False) if f > 0)


def rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def by_node(records: list[ConnectionRecord]) -> list[list[ConnectionRecord]]:
    """One request per node and interval, as agents send them."""
    groups: dict[str, list[ConnectionRecord]] = defaultdict(list)
    for r in records:
        groups[r.node].append(r)
    return list(groups.values())


def group_by_floor(records: list[ConnectionRecord]) -> dict[tuple[Any, ...], list[int]]:
    """The floor for any merge: one pass, a dict keyed by the record's edge, three sums."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for r in records:
        key = (r.k8s_namespace, r.k8s_workload, r.node, r.remote_ip, r.remote_port,
               r.local_port, r.role)
        sums = out.get(key)
        if sums is None:
            out[key] = [r.opened, r.bytes_sent, r.bytes_received]
        else:
            sums[0] += r.opened
            sums[1] += r.bytes_sent
            sums[2] += r.bytes_received
    return out


def client_keys(result: MergeResult) -> set[EdgeKey]:
    return {k for k, s in result.edges.items() if "client" in s.observed_by}


def merge_alone(scn: Scenario, cache: MetadataCache, repeats: int,
                ) -> tuple[Samples, Samples, MergeResult, Interval]:
    """merge() of one interval as the window calls it (the previous interval's client
    keys as recent ones), interleaved with the group-by floor."""
    recent = client_keys(merge(scn.interval(0).records, cache.resolver, None,
                               cache.probes_of))
    interval = scn.interval(1)
    records = interval.records
    measured, floor = Samples(), Samples()
    result = None
    for _ in range(repeats):
        floor.timed(lambda: group_by_floor(records))
        result = measured.timed(lambda: merge(records, cache.resolver, Recent(set(recent)),
                                              cache.probes_of))
    assert result is not None
    return measured, floor, result, interval


@dataclass
class WindowRun:
    per_bucket: Samples = field(default_factory=Samples)  # add (every node) + close_due
    snapshot: Samples = field(default_factory=Samples)
    snapshot_floor: Samples = field(default_factory=Samples)
    rss_delta: int = 0
    edges_last: int = 0
    memory: WindowMemory | None = None


def window_run(scn: Scenario, cache: MetadataCache, buckets: int, snapshots: int,
               memory: bool = True) -> WindowRun:
    """The map's steady state over a full window: each bucket's records arrive at its end,
    one request per node, then due buckets merge (two stay pending: lateness 15 s).
    Records of buckets already merged are recycled for later ones (generation is not
    measured; the window holds none of them any more). Then the snapshot, and the
    window weighed around one more bucket."""
    out = WindowRun()
    lists = [scn.interval(k).records for k in range(3)]  # before the RSS baseline
    gc.collect()
    rss_before = rss()
    window = MapWindow(cache.resolver, bucket_seconds=BUCKET, window_seconds=buckets * BUCKET,
                       lateness_seconds=LATENESS, probes_of=cache.probes_of)

    def arrive(k: int) -> tuple[Callable[[], None], Callable[[], int]]:
        """Bucket k's records (generated, not timed), and the map's two steps for them."""
        if k >= 3:
            scn.restamp(lists[k % 3], k)
        now, chunks = T0 + (k + 1) * BUCKET, by_node(lists[k % 3])

        def add() -> None:
            for chunk in chunks:
                window.add(chunk, now)

        return add, lambda: window.close_due(now)

    for k in range(buckets + 3):
        add, close = arrive(k)
        if k >= 2:
            out.per_bucket.timed(lambda: (add(), close()))  # noqa: B023 (called right here)
        else:
            add()
            close()
        finished = window.contents().finished
        out.edges_last = len(finished[-1][1].edges) if finished else 0
    now = T0 + (buckets + 3) * BUCKET
    for _ in range(snapshots):
        out.snapshot_floor.timed(lambda: _snapshot_floor(window))
        out.snapshot.timed(lambda: window.snapshot(now=now))
    gc.collect()
    out.rss_delta = rss() - rss_before
    if memory:
        add, close = arrive(buckets + 3)
        out.memory = window_memory(window, add, close, lambda: window.snapshot(now=now + BUCKET),
                                   lists[0])
    return out


def _snapshot_floor(window: MapWindow) -> int:
    """Summing the closed buckets' and open buckets' counters per edge."""
    totals: dict[EdgeKey, list[int]] = {}
    contents = window.contents()
    for _, result in contents.finished:
        for key, s in result.edges.items():
            t = totals.get(key)
            if t is None:
                totals[key] = [s.connections, s.bytes_sent, s.bytes_received]
            else:
                t[0] += s.connections
                t[1] += s.bytes_sent
                t[2] += s.bytes_received
    for part in contents.open.values():
        for key, s in [*part.client.items(), *part.server.items()]:
            t = totals.setdefault(key, [0, 0, 0])
            t[0] += s.connections
            t[1] += s.bytes_sent
            t[2] += s.bytes_received
    return len(totals)


@dataclass
class Rate:
    records: int
    measured: Samples
    floor: Samples

    def per_second(self, s: Samples) -> float:
        return self.records / median(s.cpu)


def enrich_agent(scn: Scenario, repeats: int) -> Rate:
    """PodIndex.enrich on each node over its own records (cgroup path → pod), against
    the same lookups on plain dicts."""
    records = scn.interval(0, enriched=False).records
    indexes: dict[str, PodIndex] = defaultdict(PodIndex)
    plain: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for p in scn.cluster.pods:
        info = pod_info(pod_object(p))
        indexes[p.node.name].upsert(info)
        plain[p.node.name][info.uid] = {"k8s_namespace": info.namespace, "k8s_pod": info.name,
                                        "k8s_pod_uid": info.uid, "k8s_workload": info.workload,
                                        "k8s_workload_kind": info.workload_kind,
                                        "k8s_host_network": info.host_network}
    groups = [(g[0].node, g) for g in by_node(records)]
    dicts = [(node, [r.model_dump() for r in g]) for node, g in groups]

    def agent() -> None:
        for node, group in groups:
            enrich = indexes[node].enrich
            for r in group:
                enrich(r)

    def floor() -> None:
        for node, group_dicts in dicts:
            get = plain[node].get
            for d in group_dicts:
                info = get(pod_uid(d["cgroup_path"]) or "")
                if info is not None:
                    {**d, **info}  # noqa: B018

    return _interleaved(len(records), agent, floor, repeats)


def resolve_map(scn: Scenario, resolver: Resolver, repeats: int) -> Rate:
    """Resolver.remote + Resolver.local per record, against two plain dict lookups."""
    records = scn.interval(0).records
    ips: dict[str, Peer] = {p.ip: p.workload.peer for p in scn.cluster.pods}
    ips.update({s.cluster_ip: s.peer for s in scn.cluster.services})
    ips.update({n.ip: Peer("node", n.name) for n in scn.cluster.nodes})
    locals_: dict[tuple[str | None, ...], Peer] = {
        (p.workload.namespace, *p.agent_name): p.workload.peer for p in scn.cluster.pods}

    def resolve() -> None:
        remote, local = resolver.remote, resolver.local
        for r in records:
            remote(r.remote_ip, r.interval_end.timestamp())
            local(r.k8s_namespace, r.k8s_workload_kind, r.k8s_workload, r.node)

    def floor() -> None:
        for r in records:
            ips.get(r.remote_ip or "")
            locals_.get((r.k8s_namespace, r.k8s_workload_kind, r.k8s_workload))

    return _interleaved(len(records), resolve, floor, repeats)


def decode_wire(scn: Scenario, repeats: int) -> Rate:
    """Protobuf bytes (one OTLP request per node) → records, against json.loads of the
    same records as JSON documents."""
    groups = by_node(scn.interval(0).records)
    blobs = [encode(g, g[0].node).SerializeToString() for g in groups]
    docs = [json.dumps([r.model_dump(mode="json", by_alias=True, exclude_none=True)
                        for r in g]).encode() for g in groups]
    total = sum(len(g) for g in groups)
    got, errors = decode(ExportLogsServiceRequest.FromString(blobs[0]))
    assert got == groups[0] and not errors, errors[:3]

    def wire() -> None:
        for b in blobs:
            decode(ExportLogsServiceRequest.FromString(b))

    def floor() -> None:
        for d in docs:
            json.loads(d)

    return _interleaved(total, wire, floor, repeats)


def _interleaved(n: int, fn: Callable[[], None], floor: Callable[[], None],
                 repeats: int) -> Rate:
    rate = Rate(n, Samples(), Samples())
    for _ in range(repeats):
        rate.floor.timed(floor)
        rate.measured.timed(fn)
    return rate
