"""Each side's retransmits and RTT on an edge: kept apart through merge, window, snapshot,
node graph, CLI table and OTLP export, and absent (not zero) for a side no agent saw."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import NumberDataPoint

from harness.otlp_capture import Capture
from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_cli.render import edge_table
from traceprobe_map import views
from traceprobe_map.buckets import EdgeKey, Recent
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.export import RTT_OBSERVER, EdgeExporter
from traceprobe_map.merge import merge
from traceprobe_map.peers import Peer, Resolver
from traceprobe_map.snapshot import MapSnapshot, build_snapshot
from traceprobe_map.window import MapWindow

WEB = Peer("workload", "web", "shop", "Deployment")
DB = Peer("workload", "db", "shop", "StatefulSet")
PAY = Peer("service", "payments", "pay")
PAY_V1 = Peer("workload", "payments-v1", "pay", "Deployment")
EDGE = EdgeKey(WEB, DB, 5432, "tcp")
AT = datetime(2025, 1, 1, tzinfo=UTC)


def _resolver() -> Resolver:
    r = Resolver()
    r.pods.claim("10.0.0.1", WEB, since=0)
    r.pods.claim("10.0.0.2", DB, since=0)
    r.services.claim("10.96.0.20", PAY, since=0)
    r.pods.claim("10.0.1.1", PAY_V1, since=0)
    r.endpoints[PAY] = frozenset({"10.0.1.1"})
    return r


def _rec(role: Role, at: float = 10, **kw: Any) -> ConnectionRecord:
    t = datetime.fromtimestamp(at, UTC)
    base: dict[str, Any] = {"node": "n1", "role": role, "transport": "tcp", "family": "ipv4",
                            "interval_start": t, "interval_end": t, "opened": 1}
    if role is Role.CLIENT:
        base.update(remote_ip="10.0.0.2", remote_port=5432, k8s_namespace="shop",
                    k8s_workload="web", k8s_workload_kind="Deployment")
    else:
        base.update(node="n2", local_port=5432, remote_ip="10.0.0.1", k8s_namespace="shop",
                    k8s_workload="db", k8s_workload_kind="StatefulSet")
    return ConnectionRecord.model_validate({**base, **kw})


def _client(**kw: Any) -> ConnectionRecord:
    return _rec(Role.CLIENT, **{"retransmits": 8, "rtt_sum_us": 400, "rtt_samples": 2,
                                "rtt_max_us": 300, **kw})


def _server(**kw: Any) -> ConnectionRecord:
    return _rec(Role.SERVER, **{"retransmits": 3, "rtt_sum_us": 3000, "rtt_samples": 3,
                                "rtt_max_us": 1500, **kw})


def _snapshot(edges: dict[EdgeKey, EdgeStats]) -> MapSnapshot:
    return build_snapshot(edges, "c", 60, AT)


def test_both_sides_keep_their_own_retransmits_and_rtt() -> None:
    """Under loss both sides resend: the client's 8 and the server's 3 are two figures,
    not the client's alone."""
    (stats,) = merge([_client(), _server()], _resolver()).edges.values()
    assert (stats.connections, stats.retransmits, stats.server_retransmits) == (1, 8, 3)
    assert (stats.rtt_samples, stats.rtt_max_us) == (2, 300)
    assert (stats.server_rtt_samples, stats.server_rtt_sum_us, stats.server_rtt_max_us) == (
        3, 3000, 1500)
    (edge,) = _snapshot({EDGE: stats}).edges
    assert (edge.retransmits_client_to_server, edge.retransmits_server_to_client,
            edge.retransmits) == (8, 3, 11)
    assert edge.rtt_by_client is not None and edge.rtt_by_server is not None
    assert (edge.rtt_by_client.samples, edge.rtt_by_client.mean_us,
            edge.rtt_by_client.max_us) == (2, 200, 300)
    assert (edge.rtt_by_server.samples, edge.rtt_by_server.mean_us,
            edge.rtt_by_server.max_us) == (3, 1000, 1500)
    assert edge.rtt_by_client.p50_us is not None and edge.rtt_by_server.p50_us is not None
    assert edge.rtt_by_client.p50_us < 250 < 800 < edge.rtt_by_server.p50_us
    assert (edge.rtt.samples, edge.rtt.mean_us, edge.rtt.max_us) == (5, 680, 1500)
    wire = edge.to_dict()
    assert (wire["retransmitsClientToServer"], wire["retransmitsServerToClient"],
            wire["rttByClient"]["samples"], wire["rttByServer"]["samples"]) == (8, 3, 2, 3)


def test_server_only_edge_has_no_client_figures() -> None:
    """A client outside the cluster: the figures are the server's, and the client's are
    absent on the wire (null in Python), not zeros pretending to be measured."""
    outside = _server(remote_ip="203.0.113.7")
    ((key, stats),) = merge([outside], _resolver()).edges.items()
    assert key.src == Peer("external", "203.0.113.7")
    assert (stats.retransmits, stats.server_retransmits) == (0, 3)
    (edge,) = _snapshot({key: stats}).edges
    assert edge.observed_by == ["server"]
    assert (edge.retransmits_client_to_server, edge.retransmits_server_to_client,
            edge.retransmits) == (None, 3, 3)
    assert edge.rtt_by_client is None and edge.rtt_by_server is not None
    assert edge.rtt_by_server.samples == edge.rtt.samples == 3
    wire = edge.to_dict()
    assert "retransmitsClientToServer" not in wire and "rttByClient" not in wire
    assert wire["retransmitsServerToClient"] == 3


def test_client_only_edge_has_no_server_figures_and_a_measured_zero_stays_zero() -> None:
    (stats,) = merge([_client(retransmits=0)], _resolver()).edges.values()
    (edge,) = _snapshot({EDGE: stats}).edges
    assert (edge.retransmits_client_to_server, edge.retransmits_server_to_client) == (0, None)
    assert edge.rtt_by_server is None and edge.rtt_by_client is not None
    assert edge.rtt_by_client.samples == 2
    wire = edge.to_dict()
    assert wire["retransmitsClientToServer"] == 0 and "retransmitsServerToClient" not in wire


def test_backends_retransmits_join_the_service_edge() -> None:
    """Through a Service (conntrack named the backend): the backend's retransmits are the
    server's figures of the client → Service edge, counted once."""
    client = _client(remote_ip="10.96.0.20", remote_port=80, backends={"10.0.1.1:8080": 1})
    backend = _server(local_ip="10.0.1.1", local_port=8080, k8s_namespace="pay",
                      k8s_workload="payments-v1", k8s_workload_kind="Deployment")
    ((key, stats),) = merge([client, backend], _resolver()).edges.items()
    assert key.dst == PAY and stats.connections == 1
    assert (stats.retransmits, stats.server_retransmits, stats.server_rtt_samples) == (8, 3, 3)


def test_server_figures_of_a_connection_counted_in_a_neighbouring_bucket_still_count() -> None:
    (carried,) = merge([_server()], _resolver(), Recent(client_keys={EDGE})).edges.values()
    assert (carried.connections, carried.server_retransmits, carried.retransmits) == (0, 3, 0)


def test_window_sums_both_sides_and_each_rtt_maximum_leaves_with_its_bucket() -> None:
    w = MapWindow(_resolver(), bucket_seconds=10, window_seconds=60, lateness_seconds=5)
    w.add([_client(at=1001), _server(at=1001)], now=1001)  # server max 1500 µs, client 300
    w.add([_rec(Role.CLIENT, 1011, retransmits=1, rtt_sum_us=100, rtt_samples=1,
                rtt_max_us=100),
           _rec(Role.SERVER, 1012, retransmits=2, rtt_sum_us=400, rtt_samples=1,
                rtt_max_us=400)], now=1012)
    w.close_due(1040)
    (edge,) = w.snapshot(now=1040).edges
    assert edge.rtt_by_client is not None and edge.rtt_by_server is not None
    assert (edge.retransmits_client_to_server, edge.retransmits_server_to_client) == (9, 5)
    assert (edge.rtt_by_client.max_us, edge.rtt_by_server.max_us) == (300, 1500)
    w.close_due(1001 + 75)  # the first bucket leaves: its maxima with it
    (edge,) = w.snapshot(now=1076).edges
    assert edge.rtt_by_client is not None and edge.rtt_by_server is not None
    assert (edge.retransmits_client_to_server, edge.retransmits_server_to_client) == (1, 2)
    assert (edge.rtt_by_client.max_us, edge.rtt_by_server.max_us, edge.rtt.max_us) == (
        100, 400, 400)
    assert (edge.rtt_by_client.samples, edge.rtt_by_server.samples) == (1, 1)
    # Each side's histogram lost its own leaving samples, not the other side's.
    assert edge.rtt_by_client.p50_us is not None and edge.rtt_by_server.p50_us is not None
    assert 80 < edge.rtt_by_client.p50_us < 120 and 330 < edge.rtt_by_server.p50_us < 480


def test_node_graph_and_cli_name_each_side_and_mark_the_unobserved_one() -> None:
    both = merge([_client(), _server()], _resolver()).edges
    outside = merge([_server(remote_ip="203.0.113.7")], _resolver()).edges
    snapshot = _snapshot({**both, **outside})
    rows = {e["source"]: e for e in views.node_graph_data(snapshot)["edges"]}
    web, ext = rows["workload:shop/web"], rows["external:203.0.113.7"]
    assert (web["detail__retransmits_client_to_server"],
            web["detail__retransmits_server_to_client"], web["detail__retransmits"]) == (8, 3, 11)
    assert (ext["detail__retransmits_client_to_server"],
            ext["detail__retransmits_server_to_client"]) == (None, 3)
    assert ext["detail__rtt_by_client_p50_us"] is None
    assert ext["detail__rtt_by_server_p50_us"] is not None
    lines = edge_table(snapshot, wide=True).splitlines()
    header = lines[0]
    assert "RETRANS CLIENT/SERVER" in header and "RTT P50 CLIENT/SERVER" in header
    start = header.index("RETRANS CLIENT/SERVER")
    cells = {line.split()[0]: line[start:].split()[0] for line in lines[1:]}
    assert cells == {"shop/web": "8/3", "203.0.113.7": "-/3"}


def _points(capture: Capture, name: str) -> list[tuple[dict[str, Any], float]]:
    last = capture.batches[-1]
    return [(dict(p.attributes or {}), p.value) for rm in last.resource_metrics
            for sm in rm.scope_metrics for m in sm.metrics if m.name == name
            for p in m.data.data_points if isinstance(p, NumberDataPoint)]


def _by(points: Sequence[tuple[dict[str, Any], float]], src: str,
        attribute: str) -> dict[str, float]:
    return {attrs[attribute]: value for attrs, value in points if attrs["k8s.src.name"] == src}


def test_otlp_retransmits_by_direction_and_rtt_by_observer() -> None:
    """transmit = client → server (as for bytes), receive = server → client; RTT points
    name the side that measured them; a side without an agent exports nothing."""
    capture = Capture()
    exporter = EdgeExporter(capture, "c", interval_seconds=3600)
    both = merge([_client(), _server()], _resolver()).edges
    outside = merge([_server(remote_ip="203.0.113.7")], _resolver()).edges
    exporter.record({**both, **outside})
    assert exporter.flush()
    exporter.shutdown()
    retransmits = _points(capture, "traceprobe.edge.retransmits")
    assert _by(retransmits, "web", "network.io.direction") == {"transmit": 8, "receive": 3}
    assert _by(retransmits, "203.0.113.7", "network.io.direction") == {"receive": 3}
    sums = _points(capture, "traceprobe.edge.rtt.sum")
    counts = _points(capture, "traceprobe.edge.rtt.count")
    assert _by(sums, "web", RTT_OBSERVER) == {"client": 400, "server": 3000}
    assert _by(counts, "web", RTT_OBSERVER) == {"client": 2, "server": 3}
    assert _by(counts, "203.0.113.7", RTT_OBSERVER) == {"server": 3}



def test_udp_edges_carry_datagrams_each_way_to_the_snapshot_otlp_and_cli() -> None:
    """A UDP flow seen from both sides: datagrams client → server and back in the
    snapshot, as OTLP points by direction, and as the CLI's rate; no connections."""
    udp: dict[str, Any] = {"transport": "udp", "opened": 0}
    client = _rec(Role.CLIENT, **udp, remote_port=53, datagrams_sent=30,
                  datagrams_received=6, bytes_sent=1200, bytes_received=600)
    server = _rec(Role.SERVER, **udp, local_port=53, datagrams_sent=6,
                  datagrams_received=30, bytes_sent=600, bytes_received=1200)
    edges = merge([client, server], _resolver()).edges
    (edge,) = _snapshot(edges).edges
    assert (edge.transport, edge.connections, edge.datagrams_sent,
            edge.datagrams_received) == ("udp", 0, 30, 6)
    assert edge.datagrams_sent_per_second == pytest.approx(0.5)
    assert views.traffic_rate(edge) == pytest.approx(36 / 60)
    capture = Capture()
    exporter = EdgeExporter(capture, "c", interval_seconds=3600)
    exporter.record(edges)
    assert exporter.flush()
    exporter.shutdown()
    points = _points(capture, "traceprobe.edge.datagrams")
    assert _by(points, "web", "network.io.direction") == {"transmit": 30, "receive": 6}
    assert not _points(capture, "traceprobe.edge.connections")
    row = edge_table(_snapshot(edges)).splitlines()[1]
    assert "53/udp" in row and "0.60 dgram" in row
