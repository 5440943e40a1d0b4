"""Service-map scale: merge time, memory and enrichment throughput at scale.

A synthetic cluster (default 5,000 pods on 50 nodes in 20 namespaces, 500
Services) is fed through the map's real metadata handlers; every 10 s bucket
brings 100,000 connection records from all nodes (both sides of pod-to-pod
connections, ClusterIP connections with conntrack backends, external peers, node
processes, UDP). Printed: merge() per interval, the window's per-bucket path and
snapshot, the map's memory holding a full window, and records/s per core of the
agent's enrichment, the map's peer resolution and wire decoding, each beside a
floor measured in the same run (a plain-dict version of the same work).

Run from the repository: `.venv/bin/python -m benchmarks.map_scale [--quick]`.
No privileges, no network; about 9 minutes with the defaults on a 2-CPU VM.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import subprocess
import sys
from collections import Counter
from statistics import median
from typing import Any

from benchmarks import map_measure as m
from benchmarks.map_cluster import build_cluster
from benchmarks.map_memory import metadata
from benchmarks.map_scenario import BUCKET, ExpectedEdge, Scenario
from benchmarks.report import table
from traceprobe_map.buckets import EdgeKey
from traceprobe_map.merge import merge

TARGET_MERGE_S, TARGET_MEMORY_MB, TARGET_RATE = 1.0, 500.0, 200_000
QUICK = {"pods": 500, "nodes": 10, "observations": 10_000, "repeats": 3, "window_buckets": 6}
LEGEND = """
  CPU seconds of this process (time.process_time; one thread, so per core), medians over
  the repeats (window rows: over the buckets); wall = median wall-clock seconds. Floors are
  plain-dict versions of the same work on the same records, run interleaved with it; ratio
  = median of the per-repeat measured/floor (rates: floor rate / measured rate, so above 1
  is slower than the floor either way). Window state: its objects walked (gc referents,
  sys.getsizeof) after one more bucket's records came in and after its merge; peak = the
  larger of those plus tracemalloc's peak of the merge, or of a snapshot(). RSS = VmRSS
  growth over the window run (before the weighing; the three intervals of records it
  recycles are generated before the baseline)."""


def mismatches(edges: dict[EdgeKey, Any], expected: dict[EdgeKey, ExpectedEdge]) -> list[str]:
    """How merged edges (EdgeStats) differ from the design; empty when they match."""
    out = [f"missing {k}" for k in expected if k not in edges]
    out += [f"unexpected {k}" for k in edges if k not in expected]
    for k, e in expected.items():
        got = edges.get(k)
        if got is not None and (got.connections, dict(got.backends), got.observed_by) != (
                e.connections, dict(e.backends), e.observed_by):
            out.append(f"{k}: got {got.connections} {dict(got.backends)} {got.observed_by}, "
                       f"designed {e.connections} {dict(e.backends)} {e.observed_by}")
    return out


def say(msg: str) -> None:
    print(f"[map-bench] {msg}", file=sys.stderr, flush=True)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.map_scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=5000)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--namespaces", type=int, default=20)
    p.add_argument("--services", type=int, default=500)
    p.add_argument("--observations", type=int, default=100_000, help="records per interval")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--window-buckets", type=int, default=30,
                   help="10 s buckets in the window (30: the map's 300 s default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true",
                   help="500 pods, 10 nodes, 10k records, 3 repeats, 6 buckets (a smoke run)")
    p.add_argument("--profile", action="store_true",
                   help="also print cProfile's top functions of one merge()")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            if getattr(args, k) == p.get_default(k):
                setattr(args, k, v)
    return args


def _facts(args: argparse.Namespace, scn: Scenario, edges: int, checked: list[str]) -> str:
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=os.path.dirname(__file__)).stdout.strip() or "?"
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    kinds = Counter(w.kind + (" (hostNetwork)" if w.host_network else "")
                    for w in scn.cluster.workloads)
    facts = [
        ("command", "python -m benchmarks.map_scale " + " ".join(
            f"--{k.replace('_', '-')} {getattr(args, k)}" for k in
            ("pods", "nodes", "observations", "repeats", "window_buckets", "seed"))),
        ("machine", f"{os.cpu_count()} CPUs, load {load} at start, Python "
                    f"{platform.python_version()}, traceprobe {git}"),
        ("cluster", f"{len(scn.cluster.pods)} pods, {len(scn.cluster.nodes)} nodes, "
                    f"{len(scn.cluster.namespaces)} namespaces, {len(scn.cluster.services)} "
                    f"Services; workloads: " + ", ".join(f"{n} {k}" for k, n in
                                                         sorted(kinds.items()))),
        ("records", f"{sum(scn.mix.values()):,}/interval: " + ", ".join(
            f"{k} {n:,}" for k, n in scn.mix.items())),
        ("edges", f"{edges:,}/interval; merge vs the scenario's design: "
                  + ("ok" if not checked else f"{len(checked)} MISMATCHES, e.g. {checked[0]}")),
    ]
    return "\n".join(f"  {k:<9} {v}" for k, v in facts)


def _time_row(name: str, s: m.Samples, floor_name: str, floor: m.Samples,
              target: float | None) -> list[str]:
    med = median(s.cpu)
    return [name, f"{med:.3f}", f"{s.p(0.9):.3f} / {max(s.cpu):.3f}", f"{median(s.wall):.3f}",
            floor_name, f"{median(floor.cpu):.3f}", f"{m.ratios(s, floor):.1f}",
            "" if target is None else f"< {target:g}",
            "" if target is None else ("ok" if med < target else "MISS")]


def _rate_row(name: str, r: m.Rate, floor_name: str, target: float | None,
              target_text: str = "") -> list[str]:
    rate = r.per_second(r.measured)
    worst = r.records / max(r.measured.cpu)
    return [name, f"{rate / 1e3:,.0f}k/s", f"min {worst / 1e3:,.0f}k/s",
            f"{r.records / median(r.measured.wall) / 1e3:,.0f}k/s", floor_name,
            f"{r.per_second(r.floor) / 1e3:,.0f}k/s", f"{m.ratios(r.measured, r.floor):.1f}",
            target_text or ("" if target is None else f">= {target / 1e3:,.0f}k/s"),
            "" if target is None else ("ok" if rate >= target else "MISS")]


def _mem_row(name: str, value: float, floor_name: str, floor: float | None,
             target: float | None, unit: str = "MB") -> list[str]:
    return [name, f"{value:,.0f} {unit}", "", "", floor_name,
            "" if floor is None else f"{floor:,.0f} {unit}",
            "" if not floor else f"{value / floor:.1f}",
            "" if target is None else f"< {target:g} {unit}",
            "" if target is None else ("ok" if value < target else "MISS")]


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    say("building the cluster and the scenario ...")
    cluster = build_cluster(args.pods, args.nodes, args.namespaces, args.services, args.seed)
    scn = Scenario(cluster, args.observations, args.seed)
    cache, kept, received = metadata(cluster)
    pods = len(cluster.pods)
    say(f"merge() x {args.repeats} ...")
    merge_s, floor_s, result, interval = m.merge_alone(scn, cache, args.repeats)
    checked = mismatches(result.edges, interval.expected)
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(merge, interval.records, cache.resolver, None, cache.probes_of)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    say(f"window: {args.window_buckets + 3} buckets, then weighing it ...")
    run = m.window_run(scn, cache, args.window_buckets, args.repeats)
    assert run.memory is not None
    mem = run.memory
    say("enrichment, resolution, decoding ...")
    agent = m.enrich_agent(scn, args.repeats)
    resolve = m.resolve_map(scn, cache.resolver, args.repeats)
    wire = m.decode_wire(scn, args.repeats)
    keep_up = args.observations / BUCKET
    group_by, one = "dict group-by sum", "1 interval's records"
    rows = [
        _time_row("merge() per interval (s)", merge_s, group_by, floor_s, TARGET_MERGE_S),
        _time_row("window add + close_due per bucket (s)", run.per_bucket, group_by, floor_s,
                  TARGET_MERGE_S),
        _time_row(f"window snapshot(), {args.window_buckets} buckets (s)", run.snapshot,
                  "dict sums + group-by", run.snapshot_floor, None),
        _mem_row("window state at rest", mem.at_rest / m.MB, one, mem.one_interval / m.MB,
                 None),
        _mem_row("  of which records not merged yet", mem.pending / m.MB, one,
                 mem.one_interval / m.MB, None),
        _mem_row("window state peak (merge or snapshot)", mem.peak / m.MB, one,
                 mem.one_interval / m.MB, None),
        _mem_row("metadata per pod, tracemalloc", kept / pods, "API objects received",
                 received / pods, None, "B"),
        _mem_row("map state peak: metadata + window", (kept + mem.peak) / m.MB, "", None,
                 TARGET_MEMORY_MB),
        _mem_row("RSS growth over the window run", run.rss_delta / m.MB, "", None,
                 TARGET_MEMORY_MB),
        _rate_row("agent PodIndex.enrich", agent, "regex + dict merge", TARGET_RATE),
        _rate_row("map Resolver.remote + .local", resolve, "2 dict lookups", TARGET_RATE),
        _rate_row("map decode (protobuf bytes)", wire, "json.loads", None,
                  f"(keep up: {keep_up / 1e3:,.0f}k/s)"),
    ]
    header = ["figure", "median", "p90 / max", "wall", "baseline", "baseline med", "ratio",
              "target", "met?"]
    print(f"\nService-map scale\n{_facts(args, scn, len(result.edges), checked)}\n")
    print(table(header, rows))
    print(LEGEND)
    return 0 if not checked else 1


if __name__ == "__main__":
    sys.exit(main())
