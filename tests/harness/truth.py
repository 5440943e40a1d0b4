"""Independent truth shared by the simulated and the real-node tiers: what the kernel's
own iptables counters say about a Service's split, and what a real Collector received,
keyed the way the tests write their expectations. (kube-proxy rewrites its chains, and
their counters, whenever endpoints change: on the real node the servers' own logs of
the peers they accepted are the split's truth.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any

from traceprobe_api.latency import quantiles

CONNS = "traceprobe.edge.connections"
FAILURES = "traceprobe.edge.failures"
DATAGRAMS = "traceprobe.edge.datagrams"
BACKENDS = "traceprobe.edge.backend.attempts"
BYTES = "traceprobe.edge.bytes"  # network.io.direction: transmit / receive, from the client

EdgeKey = tuple[str, str, int]


def dnat_split(chain: str) -> list[int]:
    """Packets per DNAT rule of a (simulated) Service chain = new connections per backend:
    the nat table sees only a connection's first packet."""
    out = subprocess.run(["iptables", "-w", "-t", "nat", "-L", chain, "-v", "-x", "-n"],
                         capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()[2:] if "DNAT" in line]


def collector_edges(collector: Any, name: str, cluster: str, namespaces: Iterable[str],
                    **attrs: Any) -> dict[EdgeKey, float]:
    """Cumulative value (its largest: sums only grow) per (src, dst, port) of the edges
    a cluster's map exported whose source is in `namespaces`; a backend metric's dst is
    "ns/service>backend"."""
    ours = set(namespaces)
    latest: dict[EdgeKey, float] = {}
    for p in collector.find(name, **{"k8s.cluster.name": cluster, **attrs}):
        a = p.attributes
        if a.get("k8s.src.namespace") not in ours:
            continue
        dst = f"{a.get('k8s.dst.namespace', '')}/{a['k8s.dst.name']}".lstrip("/")
        if name == BACKENDS:
            dst += f">{a['k8s.dst.backend.name']}"
        key = (f"{a['k8s.src.namespace']}/{a['k8s.src.name']}", dst, a.get("server.port", 0))
        latest[key] = max(latest.get(key, 0.0), p.value or 0.0)
    return latest


def histogram_count(collector: Any, name: str, **attrs: Any) -> int:
    """Samples in the histograms named `name` whose attributes include `attrs`: each
    series' latest cumulative count (its largest), summed over the series. Every export
    repeats a cumulative series, so summing every point received would count it again."""
    latest: dict[tuple[tuple[str, Any], ...], int] = {}
    for p in collector.find(name, **attrs):
        series = tuple(sorted((k, str(v)) for k, v in p.attributes.items()))
        latest[series] = max(latest.get(series, 0), int(p.extra.get("count", 0)))
    return sum(latest.values())


def latency_disagreements(buckets: dict[int, int], results: Iterable[dict[str, Any]]
                          ) -> list[tuple[float, float | None, float]]:
    """(quantile, kernel's ns, client's ns) for each of p50/p95/p99 where the kernel's
    buckets and the client's own timing (each result's `seconds`) differ by more than
    25% (a bucket's width) + 1 ms (the client library's work outside the wire)."""
    measured = sorted(r["seconds"] * 1e9 for r in results)
    out = []
    for q, got in zip((0.5, 0.95, 0.99), quantiles(buckets, 0.5, 0.95, 0.99), strict=True):
        want = measured[min(len(measured) - 1, int(q * len(measured)))]
        if got is None or abs(got - want) > 0.25 * want + 1e6:
            out.append((q, got, want))
    return out
