"""An edge's requests (probe kind http): counted once though both sides report them,
each side's latency kept apart, through merge, window, snapshot, CLI and OTLP; and the
record's own bounds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint
from pydantic import ValidationError

from harness.otlp_capture import Capture
from traceprobe_api.latency import BUCKETS, UPPER_BOUNDS_NS, bucket_of, bucket_range, quantiles
from traceprobe_api.records import ConnectionRecord, RequestCounts, Role
from traceprobe_cli.render import edge_table
from traceprobe_map.buckets import EdgeKey
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.export import EdgeExporter
from traceprobe_map.merge import merge
from traceprobe_map.peers import Peer, Resolver
from traceprobe_map.snapshot import build_snapshot
from traceprobe_map.window import MapWindow

WEB = Peer("workload", "web", "shop", "Deployment")
API = Peer("workload", "api", "shop", "Deployment")
MS = 1_000_000


def _resolver() -> Resolver:
    r = Resolver()
    r.pods.claim("10.0.0.1", WEB, since=0)
    r.pods.claim("10.0.0.2", API, since=0)
    return r


def _rows(*rows: tuple[str, int, int, int]) -> list[dict[str, Any]]:
    """(method, status, count, latency ns each) as a record's request rows."""
    return [{"protocol": "http", "method": m, "status": s, "count": n,
             "durationSumNs": n * ns, "durationBuckets": {bucket_of(ns): n}}
            for m, s, n, ns in rows]


def _rec(role: Role, rows: list[dict[str, Any]], at: float = 10, **kw: Any) -> ConnectionRecord:
    t = datetime.fromtimestamp(at, UTC)
    base: dict[str, Any] = {"node": "n1", "role": role, "transport": "tcp", "family": "ipv4",
                            "intervalStart": t, "intervalEnd": t, "opened": 1,
                            "requests": rows}
    if role is Role.CLIENT:
        base.update(remoteIp="10.0.0.2", remotePort=8080, k8sNamespace="shop",
                    k8sWorkload="web", k8sWorkloadKind="Deployment")
    else:
        base.update(node="n2", localPort=8080, remoteIp="10.0.0.1", k8sNamespace="shop",
                    k8sWorkload="api", k8sWorkloadKind="Deployment")
    return ConnectionRecord.model_validate({**base, **kw})


CLIENT_ROWS = _rows(("GET", 200, 90, 4 * MS), ("GET", 404, 6, 1 * MS), ("POST", 500, 4, 8 * MS))
SERVER_ROWS = _rows(("GET", 200, 90, 3 * MS), ("GET", 404, 6, MS // 2), ("POST", 500, 4, 7 * MS))


def test_latency_buckets_hold_what_they_say() -> None:
    assert len(UPPER_BOUNDS_NS) == BUCKETS - 1
    for ns in (0, 1023, 1024, 1279, 1280, 4 * MS, 2**35 - 1):
        low, high = bucket_range(bucket_of(ns))
        assert low <= ns < high and high - low <= max(1024, low // 4)
    assert bucket_of(2**35) == bucket_of(10**15) == BUCKETS - 1
    assert quantiles({}, 0.5) == [None]
    (p50,) = quantiles({bucket_of(4 * MS): 10}, 0.5)
    assert p50 is not None and abs(p50 - 4 * MS) <= MS


def test_both_sides_count_the_requests_once_and_keep_their_own_latency() -> None:
    (stats,) = merge([_rec(Role.CLIENT, CLIENT_ROWS), _rec(Role.SERVER, SERVER_ROWS)],
                     _resolver()).edges.values()
    (edge,) = build_snapshot({EdgeKey(WEB, API, 8080, "tcp"): stats}, "c", 10,
                             datetime.now(UTC)).edges
    (http,) = edge.requests
    assert (http.protocol, http.requests, http.counted_by) == ("http", 100, "client")
    assert http.requests_per_second == 10.0
    assert (http.errors, http.error_rate) == (10, 0.1)  # the client's 4xx and 5xx
    assert http.by_status == {"200": 90, "404": 6, "500": 4}
    assert http.by_method == {"GET": 96, "POST": 4}
    client, server = http.latency_by_client, http.latency_by_server
    assert client is not None and server is not None
    assert (client.samples, server.samples) == (100, 100)
    assert client.p50_ms is not None and server.p50_ms is not None
    assert 3.0 <= client.p50_ms <= 5.0 and 2.2 <= server.p50_ms <= 3.8
    assert client.mean_ms == pytest.approx((90 * 4 + 6 * 1 + 4 * 8) / 100)
    wire = edge.to_dict()["requests"][0]
    assert wire["latencyByServer"]["samples"] == 100 and wire["countedBy"] == "client"


def test_a_server_seen_alone_counts_its_own_errors_only() -> None:
    outside = _rec(Role.SERVER, SERVER_ROWS, remoteIp="203.0.113.7")
    ((key, stats),) = merge([outside], _resolver()).edges.items()
    (edge,) = build_snapshot({key: stats}, "c", 10, datetime.now(UTC)).edges
    (http,) = edge.requests
    assert (http.requests, http.counted_by, http.errors) == (100, "server", 4)  # 5xx only
    assert http.latency_by_client is None and http.latency_by_server is not None


def test_the_window_sums_requests_and_lets_them_leave_with_their_bucket() -> None:
    w = MapWindow(_resolver(), bucket_seconds=10, window_seconds=60, lateness_seconds=5)
    w.add([_rec(Role.CLIENT, CLIENT_ROWS, at=1001)], now=1001)
    w.add([_rec(Role.CLIENT, _rows(("GET", 200, 5, MS)), at=1011)], now=1012)
    w.close_due(1040)
    (edge,) = w.snapshot(now=1040).edges
    assert edge.requests[0].requests == 105
    w.close_due(1001 + 75)  # the first bucket leaves
    (edge,) = w.snapshot(now=1076).edges
    (http,) = edge.requests
    assert (http.requests, http.by_status, http.errors) == (5, {"200": 5}, 0)
    assert http.latency_by_client is not None and http.latency_by_client.samples == 5


def test_edges_without_requests_carry_none() -> None:
    plain = _rec(Role.CLIENT, [], requests=None)
    assert "requests" not in plain.to_dict()
    (stats,) = merge([plain], _resolver()).edges.values()
    assert stats.requests is None
    (edge,) = build_snapshot({EdgeKey(WEB, API, 8080, "tcp"): stats}, "c", 10,
                             datetime.now(UTC)).edges
    assert edge.requests == []
    assert edge_table(build_snapshot({EdgeKey(WEB, API, 8080, "tcp"): stats}, "c", 10,
                                     datetime.now(UTC))).splitlines()[1].split()[-3:] == [
        "-", "-", "-"]


def test_the_cli_shows_request_rate_errors_and_client_latency() -> None:
    (stats,) = merge([_rec(Role.CLIENT, CLIENT_ROWS)], _resolver()).edges.values()
    text = edge_table(build_snapshot({EdgeKey(WEB, API, 8080, "tcp"): stats}, "c", 10,
                                     datetime.now(UTC)))
    header, row = text.splitlines()
    assert header.split()[-5:] == ["REQ/S", "REQ", "ERR", "REQ", "P50/P99"]
    rate, errors, latency = row.split()[-3:]
    assert (rate, errors) == ("10.0", "10.0%")
    p50, p99 = latency.split("/")
    assert p50.endswith("ms") and 3.0 <= float(p50[:-2]) <= 5.0
    assert p99.endswith("ms") and 7.0 <= float(p99[:-2]) <= 10.0


def test_records_refuse_requests_that_do_not_add_up() -> None:
    good = _rows(("GET", 200, 2, MS))[0]
    RequestCounts.model_validate(good)
    for bad in ({**good, "durationBuckets": {bucket_of(MS): 1}},  # 1 of 2 requests
                {**good, "method": "BREW"}, {**good, "status": 700},
                {**good, "durationBuckets": {BUCKETS: 2}}, {**good, "protocol": "smtp"}):
        with pytest.raises(ValidationError):
            RequestCounts.model_validate(bad)
    with pytest.raises(ValidationError, match="requests"):
        _rec(Role.CLIENT, _rows(*[("GET", 200, 1, MS)] * 513))


def _metrics(capture: Capture) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for rm in capture.batches[-1].resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def test_otlp_has_semantic_convention_histograms_and_a_request_service_graph() -> None:
    capture = Capture()
    exporter = EdgeExporter(capture, "c", interval_seconds=3600, service_graph=True)
    edges = merge([_rec(Role.CLIENT, CLIENT_ROWS), _rec(Role.SERVER, SERVER_ROWS)],
                  _resolver()).edges
    exporter.record(edges)
    exporter.record(edges)  # cumulative: twice the counts
    assert exporter.flush()
    exporter.shutdown()
    metrics = _metrics(capture)
    client = {(p.attributes["http.request.method"], p.attributes["http.response.status_code"]):
              p for p in metrics["http.client.request.duration"]}
    assert set(client) == {("GET", 200), ("GET", 404), ("POST", 500)}
    ok = client[("GET", 200)]
    assert isinstance(ok, HistogramDataPoint)
    assert (ok.count, sum(ok.bucket_counts), len(ok.bucket_counts)) == (180, 180, BUCKETS)
    assert ok.sum == pytest.approx(180 * 0.004)
    assert list(ok.explicit_bounds) == [ns / 1e9 for ns in UPPER_BOUNDS_NS]
    attrs = dict(ok.attributes or {})
    assert attrs["server.address"] == "api" and attrs["server.port"] == 8080
    assert attrs["k8s.src.name"] == "web" and "error.type" not in attrs
    assert client[("GET", 404)].attributes["error.type"] == "404"
    server = {p.attributes["http.response.status_code"]: p
              for p in metrics["http.server.request.duration"]}
    assert "error.type" not in server[404].attributes and server[500].count == 8
    total = [p.value for p in metrics["traces_service_graph_request_total"]
             if isinstance(p, NumberDataPoint)]
    failed = [p.value for p in metrics["traces_service_graph_request_failed_total"]]
    assert (total, failed) == ([200], [20])  # requests, not the 2 connections
    assert sum(p.count for p in metrics["traces_service_graph_request_client_seconds"]) == 200
    assert sum(p.count for p in metrics["traces_service_graph_request_server_seconds"]) == 200


def test_a_connection_only_edge_keeps_its_service_graph_of_connections() -> None:
    capture = Capture()
    exporter = EdgeExporter(capture, "c", interval_seconds=3600, service_graph=True)
    exporter.record({EdgeKey(WEB, API, 5432, "tcp"): EdgeStats(connections=7, resets=1)})
    assert exporter.flush()
    exporter.shutdown()
    metrics = _metrics(capture)
    assert [p.value for p in metrics["traces_service_graph_request_total"]] == [7]
    assert "http.client.request.duration" not in metrics


def _dns_rows(*rows: tuple[str, int, int]) -> list[dict[str, Any]]:
    return [{"protocol": "dns", "method": t, "status": rcode, "count": n,
             "durationSumNs": n * MS, "durationBuckets": {bucket_of(MS): n}}
            for t, rcode, n in rows]


def test_dns_lookups_name_their_codes_count_every_failure_and_export_lookup_time() -> None:
    asked = _rec(Role.CLIENT, _dns_rows(("A", 0, 7), ("AAAA", 3, 2), ("A", 2, 1)),
                 transport="udp", opened=0, remotePort=53)
    (stats,) = merge([asked], _resolver()).edges.values()
    key = EdgeKey(WEB, API, 53, "udp")
    (dns,) = build_snapshot({key: stats}, "c", 10, datetime.now(UTC)).edges[0].requests
    assert (dns.protocol, dns.requests, dns.errors) == ("dns", 10, 3)  # NXDOMAIN, SERVFAIL
    assert dns.by_status == {"NOERROR": 7, "NXDOMAIN": 2, "SERVFAIL": 1}
    assert dns.by_method == {"A": 8, "AAAA": 2}
    capture = Capture()
    exporter = EdgeExporter(capture, "c", interval_seconds=3600)
    exporter.record({key: stats})
    assert exporter.flush()
    exporter.shutdown()
    points = _metrics(capture)["dns.lookup.duration"]
    by = {(p.attributes["dns.question.type"], p.attributes.get("error.type")): p.count
          for p in points}
    assert by == {("A", None): 7, ("AAAA", "NXDOMAIN"): 2, ("A", "SERVFAIL"): 1}
    assert "http.client.request.duration" not in _metrics(capture)


def test_records_hold_each_protocol_to_its_own_methods_and_codes() -> None:
    ok = _dns_rows(("AAAA", 3, 1))[0]
    RequestCounts.model_validate(ok)
    for bad in ({**ok, "status": 16}, {**ok, "method": "GET"},
                {**_rows(("GET", 200, 1, MS))[0], "method": "AAAA"},
                {**_rows(("GET", 200, 1, MS))[0], "status": 3}):
        with pytest.raises(ValidationError):
            RequestCounts.model_validate(bad)


def test_tls_and_http2_connections_are_said_to_be_unparsed() -> None:
    client = _rec(Role.CLIENT, [], requests=None, unparsed={"tls": 3, "http2": 1})
    server = _rec(Role.SERVER, [], requests=None, unparsed={"tls": 3})
    (stats,) = merge([client, server], _resolver()).edges.values()
    key = EdgeKey(WEB, API, 8080, "tcp")
    (edge,) = build_snapshot({key: stats}, "c", 10, datetime.now(UTC)).edges
    assert edge.unparsed_connections == {"http2": 1, "tls": 3}  # counted once
    assert edge.requests == []
    capture = Capture()
    exporter = EdgeExporter(capture, "c", interval_seconds=3600, service_graph=True)
    exporter.record({key: stats})
    assert exporter.flush()
    exporter.shutdown()
    metrics = _metrics(capture)
    assert {p.attributes["network.protocol.name"]: p.value
            for p in metrics["traceprobe.edge.unparsed.connections"]} == {"tls": 3, "http2": 1}
    # No request was parsed: the service graph counts the edge's connections.
    assert [p.value for p in metrics["traces_service_graph_request_total"]] == [1]
