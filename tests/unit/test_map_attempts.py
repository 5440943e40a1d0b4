"""One definition of attempts and failures, used by the snapshot, the view's graph data
and the service-graph export: a reset connection is one attempt that failed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from traceprobe_map.buckets import EdgeKey
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.peers import Peer
from traceprobe_map.snapshot import build_snapshot
from traceprobe_map.views import node_graph_data, traffic_rate

WEB = Peer("workload", "web", "shop", "Deployment")
DB = Peer("workload", "db", "shop", "StatefulSet")
AT = datetime(2026, 1, 1, tzinfo=UTC)


def _edge(**counts: int) -> EdgeStats:
    stats = EdgeStats()
    for name, value in counts.items():
        setattr(stats, name, value)
    return stats


@pytest.mark.parametrize(("counts", "attempts", "failed", "rate"), [
    ({"connections": 3, "resets": 3}, 3, 3, 1.0),  # all reset: 3 tries, all failed
    ({"refused": 2}, 2, 2, 1.0),  # never connected
    ({"timeouts": 4}, 4, 4, 1.0),
    ({"connections": 8, "resets": 2, "refused": 1, "timeouts": 1}, 10, 4, 0.4),  # mixed
    ({"connections": 5}, 5, 0, 0.0),
])
def test_each_failure_kind(counts: dict[str, int], attempts: int, failed: int,
                           rate: float) -> None:
    stats = _edge(**counts)
    assert (stats.attempts, stats.failures) == (attempts, failed)
    snapshot = build_snapshot({EdgeKey(WEB, DB, 5432, "tcp"): stats}, "c", 10.0, AT)
    (edge,) = snapshot.edges
    assert (edge.attempts, edge.failures.total, edge.error_rate) == (attempts, failed, rate)
    assert traffic_rate(edge) == pytest.approx(attempts / 10.0)
    graph = node_graph_data(snapshot)
    db = next(n for n in graph["nodes"] if n["id"] == edge.target)
    assert db["arc__failed"] == pytest.approx(failed / attempts)
    assert db["arc__ok"] + db["arc__failed"] == pytest.approx(1.0)


def test_service_backends_break_down_the_attempts() -> None:
    """conntrack parts plus the unknown ones are the edge's attempts, refused included;
    without conntrack the parts are the backends' own counts, and the edge says so."""
    from traceprobe_api.records import ConnectionRecord
    from traceprobe_map.merge import merge
    from traceprobe_map.peers import Resolver

    pay, v1, v2 = (Peer("service", "payments", "pay"),
                   Peer("workload", "payments-v1", "pay", "Deployment"),
                   Peer("workload", "payments-v2", "pay", "Deployment"))
    r = Resolver()
    r.pods.claim("10.0.0.1", WEB, since=0)
    r.services.claim("10.96.0.20", pay, since=0)
    r.pods.claim("10.0.1.1", v1, since=0)
    r.pods.claim("10.0.1.2", v2, since=0)
    client = ConnectionRecord.model_validate({
        "node": "n1", "role": "client", "transport": "tcp", "family": "ipv4",
        "remoteIp": "10.96.0.20", "remotePort": 80, "k8sNamespace": "shop",
        "k8sWorkloadKind": "Deployment", "k8sWorkload": "web", "intervalStart": AT,
        "intervalEnd": AT, "opened": 4, "refused": 2,
        "backends": {"10.0.1.1:8080": 3, "10.0.1.2:8080": 2}})  # one attempt's flow missed
    snapshot = build_snapshot(merge([client], r).edges, "c", 10.0, AT)
    (edge,) = snapshot.edges
    assert edge.attempts == 6 and edge.backends_from == "conntrack"
    assert [(b.id, b.attempts) for b in edge.backends] == [
        ("workload:pay/payments-v1", 3), ("workload:pay/payments-v2", 2)]
    assert sum(b.attempts for b in edge.backends) + (edge.backends_unknown or 0) == 6
    assert edge.backends_unknown == 1

    stats = _edge(connections=3)
    stats.backends[v1] = 2
    (fallback,) = build_snapshot({EdgeKey(WEB, pay, 80, "tcp"): stats}, "c", 10.0, AT).edges
    assert fallback.backends_from == "endpoints" and fallback.backends_unknown is None
    (plain,) = build_snapshot({EdgeKey(WEB, DB, 80, "tcp"): _edge(connections=1)}, "c", 10.0,
                              AT).edges
    assert plain.backends_from is None and plain.backends_unknown is None
