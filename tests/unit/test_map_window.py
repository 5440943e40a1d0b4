"""The sliding window: buckets merged once, late records kept, caps counted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_map import window as window_module
from traceprobe_map.buckets import EdgeKey
from traceprobe_map.peers import Peer, Resolver
from traceprobe_map.window import MapWindow

WEB = Peer("workload", "web", "shop", "Deployment")
DB = Peer("workload", "db", "shop", "StatefulSet")


def _rec(at: float, role: Role = Role.CLIENT, **kw: object) -> ConnectionRecord:
    t = datetime.fromtimestamp(at, UTC)
    base: dict[str, object] = {"node": "n1", "role": role, "transport": "tcp", "family": "ipv4",
                               "interval_start": t, "interval_end": t, "opened": 1}
    if role is Role.CLIENT:
        base.update(remote_ip="10.0.0.2", remote_port=5432, k8s_namespace="shop",
                    k8s_workload="web", k8s_workload_kind="Deployment", bytes_sent=100)
    else:
        base.update(local_port=5432, remote_ip="10.0.0.1", k8s_namespace="shop",
                    k8s_workload="db", k8s_workload_kind="StatefulSet", bytes_received=100)
    return ConnectionRecord.model_validate({**base, **kw})


def _window(**kw: object) -> tuple[MapWindow, list[dict[EdgeKey, object]]]:
    r = Resolver()
    r.pods.claim("10.0.0.1", WEB, since=0)
    r.pods.claim("10.0.0.2", DB, since=0)
    exported: list[dict[EdgeKey, object]] = []
    w = MapWindow(r, bucket_seconds=10, window_seconds=60, lateness_seconds=5,
                  on_bucket=lambda edges: exported.append(dict(edges)), **kw)  # type: ignore[arg-type]
    return w, exported


def test_bucket_merges_once_when_due_and_snapshot_rates() -> None:
    w, exported = _window()
    w.add([_rec(1001), _rec(1002), _rec(1003, Role.SERVER)], now=1003)
    assert w.close_due(1014) == 0  # 1000..1010 + 5 s lateness not over yet
    snap = w.snapshot(now=1014)  # unmerged records are in the snapshot already
    (edge,) = snap.edges
    assert edge.connections == 2 and edge.observed_by == ["client", "server"]
    assert w.close_due(1015) == 1 and len(exported) == 1
    (stats,) = exported[0].values()
    assert stats.connections == 2  # type: ignore[attr-defined]
    snap = w.snapshot(now=1020)
    assert snap.window_seconds == 17  # covered since the first record arrived
    assert abs(snap.edges[0].connections_per_second - 2 / 17) < 1e-9
    assert w.snapshot(window_seconds=5, now=1040).edges == []  # outside a 5 s window


def test_late_records_count_in_a_newer_bucket_and_server_side_is_not_recounted() -> None:
    w, exported = _window()
    w.add([_rec(1001)], now=1001)
    w.close_due(1016)
    # The server's agent reports the same connection a bucket later.
    w.add([_rec(1005, Role.SERVER), _rec(1012)], now=1016)
    assert w.stats.late_records == 1
    w.close_due(1030)
    assert [sum(s.connections for s in b.values()) for b in exported] == [1, 1]  # type: ignore[attr-defined]


def test_pending_cap_drops_and_counts() -> None:
    w, _ = _window(max_pending_records=3)
    assert w.add([_rec(1001)] * 5, now=1001) == 2
    assert w.stats.dropped_records == 2 and w.stats.records == 3


def test_old_buckets_leave_the_window() -> None:
    w, _ = _window()
    w.add([_rec(1001)], now=1001)
    w.close_due(1016)
    assert w.snapshot(now=1050).edges
    w.close_due(1200)
    assert w.snapshot(now=1200).edges == []


def test_names_and_rtt_maximum_leave_with_their_bucket() -> None:
    """Counts are subtracted; pods, nodes and the RTT maximum of a leaving bucket stay
    only while a bucket still in the window carries them."""
    w, _ = _window()

    def rec(at: float, pod: str, node: str, rtt_max: int) -> ConnectionRecord:
        return _rec(at, k8s_pod=pod, k8s_pod_uid=f"uid-{pod}", node=node, rtt_max_us=rtt_max,
                    rtt_sum_us=rtt_max // 2, rtt_samples=1)

    w.add([rec(1001, "web-old", "n1", 900)], now=1001)
    w.add([rec(1011, "web-new", "n2", 300), rec(1012, "web-both", "n2", 200)], now=1012)
    w.add([rec(1021, "web-both", "n2", 200)], now=1021)
    w.close_due(1040)

    def edge_at(now: float) -> tuple[set[str], set[str], int, int | None]:
        (edge,) = w.snapshot(now=now).edges
        (total,) = w.contents().totals.values()
        assert total.stats.connections == edge.connections
        return set(total.stats.src_pods), set(total.stats.src_nodes), edge.connections, \
            edge.rtt.max_us

    assert edge_at(1040) == ({"shop/web-old", "shop/web-new", "shop/web-both"}, {"n1", "n2"},
                             4, 900)
    w.close_due(1001 + 75)  # the first bucket leaves (window 60 + bucket 10 + lateness 5)
    assert edge_at(1076) == ({"shop/web-new", "shop/web-both"}, {"n2"}, 3, 300)
    w.close_due(1011 + 75)
    assert edge_at(1086) == ({"shop/web-both"}, {"n2"}, 1, 200)
    w.close_due(1021 + 75)
    assert w.snapshot(now=1096).edges == [] and not w.contents().totals


def test_server_side_behind_a_service_in_the_next_bucket_is_not_recounted() -> None:
    """web → Service db (ClusterIP) → a db pod: the client's record (with conntrack's
    backend, or without it) lands in one bucket, the db pod's own record in the next;
    the map keeps one Service edge, no direct web → db edge."""
    for conntrack in (True, False):
        w, exported = _window()
        w.resolver.services.claim("10.96.0.10", Peer("service", "db", "shop"), since=0)
        w.resolver.endpoints[Peer("service", "db", "shop")] = frozenset({"10.0.0.2"})
        backends: dict[str, object] = {"10.0.0.2:5432": 1} if conntrack else {}
        w.add([_rec(1008, remote_ip="10.96.0.10", remote_port=80, backends=backends)],
              now=1008)
        w.add([_rec(1012, Role.SERVER)], now=1012)  # the db pod's agent, a bucket later
        w.close_due(1040)
        edges = [(k.src.name, k.dst.name, s.connections)  # type: ignore[attr-defined]
                 for bucket in exported for k, s in bucket.items()]
        # Counted once; the next bucket adds only who saw it (the db pod's agent).
        assert edges == [("web", "db", 1), ("web", "db", 0)], (conntrack, edges)
        assert all(next(iter(b)).dst.kind == "service" for b in exported)
        assert next(iter(exported[1].values())).observed_by == {"server"}  # type: ignore[attr-defined]


def test_server_side_a_bucket_before_its_client_side_is_not_counted_twice() -> None:
    """The server's agent ends its interval first: its record lands in one bucket, the
    client's in the next; when the first bucket is finished the second is still open,
    and its client side already says the edge is counted there."""
    w, exported = _window()
    w.add([_rec(1009, Role.SERVER)], now=1009)
    w.add([_rec(1011)], now=1011)
    w.close_due(1040)
    edges = [(k.src.name, k.dst.name, s.connections)  # type: ignore[attr-defined]
             for bucket in exported for k, s in bucket.items()]
    assert edges == [("web", "db", 0), ("web", "db", 1)]
    (edge,) = w.snapshot(now=1040).edges
    assert edge.connections == 1 and edge.observed_by == ["client", "server"]


def test_a_partial_window_sums_closed_buckets_without_holding_the_ingest_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    w, _ = _window()
    for start in range(1000, 1050, 10):
        w.add([_rec(start + 1, remote_port=5000 + i) for i in range(20)], now=start + 1)
        w.close_due(start + 16)
    w.add([_rec(1052)], now=1052)  # and one open bucket
    held: list[bool] = []
    real = window_module._add_all

    def watched(totals: dict, edges: object) -> None:  # type: ignore[type-arg]
        held.append(w.lock.locked())
        real(totals, edges)  # type: ignore[arg-type]

    monkeypatch.setattr(window_module, "_add_all", watched)
    partial = w.snapshot(window_seconds=30, now=1055)
    assert held and not any(held)  # ingest may add records all the while
    assert {e.port for e in partial.edges} == {5000 + i for i in range(20)} | {5432}
    held.clear()
    whole = w.snapshot(now=1055)  # the running totals change at every close: locked
    assert held[0] and len(whole.edges) == len(partial.edges)
