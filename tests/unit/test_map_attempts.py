"""One definition of attempts and failures, used by the snapshot, the view's graph data
and the service-graph export: a reset connection is one attempt that failed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from traceprobe_map.buckets import EdgeKey
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.peers import Peer
from traceprobe_map.snapshot import build_snapshot
from traceprobe_map.views import attempts_per_second, node_graph_data

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
    assert attempts_per_second(edge) == pytest.approx(attempts / 10.0)
    graph = node_graph_data(snapshot)
    db = next(n for n in graph["nodes"] if n["id"] == edge.target)
    assert db["arc__failed"] == pytest.approx(failed / attempts)
    assert db["arc__ok"] + db["arc__failed"] == pytest.approx(1.0)
