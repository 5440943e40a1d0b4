"""Service-map edges reach a real OpenTelemetry Collector with the right names."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from traceprobe_map.buckets import EdgeKey
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.export import EdgeExporter, make_exporter
from traceprobe_map.peers import Peer


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_edges_exported_with_semconv_and_service_graph(collector: Any, protocol: str) -> None:
    cluster = f"c-{uuid.uuid4().hex[:8]}"
    endpoint = (collector.grpc_endpoint if protocol == "grpc"
                else f"{collector.http_endpoint}/v1/metrics")
    exporter = EdgeExporter(make_exporter(protocol, endpoint, insecure=True), cluster,
                            interval_seconds=60, service_graph=True)
    key = EdgeKey(Peer("workload", "web", "shop", "Deployment"),
                  Peer("workload", "db", "shop", "StatefulSet"), 5432, "tcp")
    stats = EdgeStats(connections=7, refused=2, bytes_sent=700, bytes_received=2100,
                      rtt_sum_us=350, rtt_samples=7, retransmits=4, server_retransmits=2,
                      server_rtt_sum_us=900, server_rtt_samples=3)
    exporter.record({key: stats})
    assert exporter.flush()
    exporter.shutdown()

    # Cumulative sums: the flush and the shutdown each export the same totals.
    points = collector.wait_for("traceprobe.edge.connections", **{"k8s.cluster.name": cluster})
    assert {p.value for p in points} == {7.0}
    conns = points[0]
    assert {k: conns.attributes[k] for k in (
        "k8s.src.namespace", "k8s.src.name", "k8s.src.owner.type", "k8s.dst.name",
        "server.port", "network.transport")} == {
        "k8s.src.namespace": "shop", "k8s.src.name": "web", "k8s.src.owner.type": "Deployment",
        "k8s.dst.name": "db", "server.port": 5432, "network.transport": "tcp"}
    sent = collector.find("traceprobe.edge.bytes", **{"k8s.cluster.name": cluster,
                                                      "network.io.direction": "transmit"})
    assert sent and {p.value for p in sent} == {700.0}
    # Retransmits by the direction they travelled, as bytes: transmit is client → server.
    resent = collector.find("traceprobe.edge.retransmits", **{"k8s.cluster.name": cluster})
    assert {(p.attributes["network.io.direction"], p.value) for p in resent} == {
        ("transmit", 4.0), ("receive", 2.0)}
    # RTT by the side whose kernel measured it.
    for name, client, server in (("traceprobe.edge.rtt.sum", 350.0, 900.0),
                                 ("traceprobe.edge.rtt.count", 7.0, 3.0)):
        rtt = collector.find(name, **{"k8s.cluster.name": cluster})
        assert {(p.attributes["traceprobe.rtt.observer"], p.value) for p in rtt} == {
            ("client", client), ("server", server)}, name
    failed = collector.find("traceprobe.edge.failures", **{"k8s.cluster.name": cluster})
    assert {(p.attributes["failure.kind"], p.value) for p in failed} == {("refused", 2.0)}
    graph = [p for p in collector.find("traces_service_graph_request_total", client="web")
             if p.resource.get("k8s.cluster.name") == cluster]
    assert {(p.attributes["server"], p.attributes["server_service_namespace"], p.value)
            for p in graph} == {("db", "shop", 9.0)}  # requests include the failed ones


def test_unknown_protocol_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="use grpc or http/protobuf"):
        make_exporter("udp")


def test_sums_beyond_int64_saturate_and_later_exports_still_arrive(collector: Any) -> None:
    """A bucket can sum valid records past what OTLP's int64 holds; the point saturates
    at int64's maximum instead of failing this and every later export."""
    from traceprobe_map.series import INT64_MAX

    cluster = f"c-{uuid.uuid4().hex[:8]}"
    exporter = EdgeExporter(make_exporter("grpc", collector.grpc_endpoint, insecure=True),
                            cluster, interval_seconds=60)
    web, db = Peer("workload", "web", "shop", "Deployment"), Peer("workload", "db", "shop")
    exporter.record({EdgeKey(web, db, 5432, "tcp"): EdgeStats(connections=1, bytes_sent=2**70,
                                                              rtt_sum_us=2**64, rtt_samples=1)})
    assert exporter.flush()
    exporter.record({EdgeKey(web, db, 6379, "tcp"): EdgeStats(connections=3)})
    assert exporter.flush()
    exporter.shutdown()
    later = collector.wait_for("traceprobe.edge.connections",
                               **{"k8s.cluster.name": cluster, "server.port": 6379})
    assert {p.value for p in later} == {3.0}
    sent = collector.find("traceprobe.edge.bytes", **{"k8s.cluster.name": cluster,
                                                      "network.io.direction": "transmit"})
    assert sent and {p.value for p in sent} == {float(INT64_MAX)}
