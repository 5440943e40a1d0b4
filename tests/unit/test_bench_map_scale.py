"""The service-map scale benchmark's workload, checked at a tiny scale (no timings)."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from traceprobe_agent.pod_index import PodIndex, pod_info
from traceprobe_api.records import Role
from traceprobe_map.merge import merge
from traceprobe_map.metadata import MetadataCache
from traceprobe_map.peers import Resolver

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/: not installed
from benchmarks import map_measure, map_memory, map_scale
from benchmarks.map_cluster import T0, api_objects, build_cluster, load, pod_object
from benchmarks.map_scale import mismatches
from benchmarks.map_scenario import SHARES, Scenario

EXTERNAL_CLIENTS = IPv4Network("203.0.0.0/8")


def _world(observations: int = 1500) -> tuple[Scenario, MetadataCache]:
    cluster = build_cluster(pods=150, nodes=4, namespaces=6, services=25, seed=7)
    cache = MetadataCache(Resolver())
    load(cache, api_objects(cluster), T0 - 3600)
    return Scenario(cluster, observations, seed=7), cache


def test_cluster_has_every_workload_kind_and_the_cache_knows_it() -> None:
    scn, cache = _world()
    kinds = {w.kind for w in scn.cluster.workloads}
    assert kinds == {"Deployment", "StatefulSet", "DaemonSet", "CronJob", "Pod"}
    assert len(scn.cluster.pods) == 150
    sizes = cache.sizes()
    assert (sizes["pods"], sizes["nodes"], sizes["services"]) == (150, 4, 25)
    assert sizes["owners"] > 0  # ReplicaSets -> Deployments, Jobs -> CronJobs


def test_merge_makes_exactly_the_designed_edges_each_connection_once() -> None:
    scn, cache = _world()
    interval = scn.interval(0, validate=True)
    records = interval.records
    assert len(records) == 1500 and sum(scn.mix.values()) == 1500
    assert set(scn.mix) == set(SHARES) and all(scn.mix.values())
    result = merge(records, cache.resolver, None, cache.probes_of)
    assert mismatches(result.edges, interval.expected) == []
    assert result.udp_records == interval.udp_records > 0
    # Each connection once: the clients' counts, plus the servers' whose clients have no
    # agent (outside the cluster); never both sides of one connection.
    clients = sum(r.opened for r in records if r.role is Role.CLIENT)
    outside = sum(r.opened for r in records if r.role is Role.SERVER
                  and IPv4Address(r.remote_ip or "0.0.0.0") in EXTERNAL_CLIENTS)
    both_sides = sum(r.opened for r in records if r.role is not Role.UDP)
    assert sum(s.connections for s in result.edges.values()) == clients + outside < both_sides
    services = [s for k, s in result.edges.items() if k.dst.kind == "service"]
    assert services and all(sum(s.backends.values()) == s.connections for s in services)
    assert all(s.probes for s in result.edges.values() if "client" in s.observed_by
               and s.src_pods)


def test_fast_records_equal_validated_ones_and_restamping_equals_a_fresh_interval() -> None:
    scn, _ = _world(600)
    fast, slow = scn.interval(3), scn.interval(3, validate=True)
    assert fast.records == slow.records
    assert [r.model_fields_set for r in fast.records] == [
        r.model_fields_set for r in slow.records]
    scn.restamp(fast.records, 8)
    assert fast.records == scn.interval(8, validate=True).records


def test_agent_enrichment_names_what_the_scenario_named() -> None:
    scn, _ = _world(600)
    index = PodIndex()
    for p in scn.cluster.pods:
        index.upsert(pod_info(pod_object(p)))
    bare, named = scn.interval(1, enriched=False).records, scn.interval(1).records
    assert any(r.k8s_pod is None for r in bare)
    assert [index.enrich(r) for r in bare] == named


def test_window_run_merges_every_bucket_to_the_design() -> None:
    scn, cache = _world(600)
    run = map_measure.window_run(scn, cache, buckets=3, snapshots=1)
    assert run.edges_last == len(scn.interval(3).expected)
    assert len(run.per_bucket.cpu) == 4 and len(run.snapshot.cpu) == 1
    mem = run.memory
    assert mem is not None and mem.peak > mem.at_rest > mem.pending > 0
    assert mem.pending < mem.one_interval  # folded on arrival: no records are kept


def test_deep_size_agrees_with_tracemalloc() -> None:
    scn, _ = _world(600)
    records = scn.interval(2).records
    gc.collect()
    tracemalloc.start()
    try:
        fresh = scn.interval(2).records
        traced = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert fresh == records
    assert abs(map_memory.deep_size([fresh]) / traced - 1) < 0.1


def test_benchmark_command_runs_at_a_tiny_scale(capsys: object) -> None:
    assert map_scale.main(["--pods", "80", "--nodes", "3", "--namespaces", "5",
                           "--services", "12", "--observations", "400", "--repeats", "1",
                           "--window-buckets", "2"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "merge vs the scenario's design: ok" in out and "map decode" in out
