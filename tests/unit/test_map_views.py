"""What the map view, API and CLI show of a snapshot: filters, sorting, Grafana Node Graph
frames, exports, and the CLI's pure renderers, on the shop scenario (harness.known_maps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from harness import known_maps as shop
from traceprobe_cli import __main__ as cli
from traceprobe_cli.render import bytes_rate, edge_table, micros, rate
from traceprobe_cli.status import build_status, status_text
from traceprobe_map import graph_exports, views
from traceprobe_map.snapshot import MapSnapshot


def _edges(snapshot: MapSnapshot) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in snapshot.edges}


def _filter(**params: str) -> MapSnapshot:
    query = views.parse_query({k: [v] for k, v in params.items()})
    return views.filter_snapshot(shop.shop_snapshot(), query)


def test_empty_query_keeps_everything() -> None:
    assert views.filter_snapshot(shop.shop_snapshot(), views.MapQuery()) == shop.shop_snapshot()


def test_namespace_keeps_edges_touching_it_and_service_backends() -> None:
    pay = _filter(namespace="pay")
    assert _edges(pay) == {(shop.FRONTEND, shop.PAYMENTS), (shop.PAYMENTS_V2, shop.BANK)}
    assert {n.id for n in pay.nodes} == {shop.FRONTEND, shop.PAYMENTS, shop.PAYMENTS_V1,
                                         shop.PAYMENTS_V2, shop.BANK}
    both = views.filter_snapshot(shop.shop_snapshot(),
                                 views.parse_query({"namespace": ["pay,shop"]}))
    assert len(both.edges) == 7


def test_probe_min_rate_and_search() -> None:
    assert _edges(_filter(probe="platform")) == {
        (shop.FRONTEND, shop.PAYMENTS), (shop.FRONTEND, shop.NODE1), (shop.PAYMENTS_V2, shop.BANK)}
    # A failing-only edge has traffic: its attempts count (0.75/s refused).
    assert _edges(_filter(minRate="0.7")) == {
        (shop.FRONTEND, shop.CART), (shop.FRONTEND, shop.PAYMENTS), (shop.CART, shop.STORE),
        (shop.CART, shop.INVENTORY)}
    assert _edges(_filter(search="203.0.113")) == {(shop.FRONTEND, shop.EXTERNAL)}
    assert _edges(_filter(search="STORE")) == {(shop.CART, shop.STORE)}
    isolated = _filter(search="store")
    assert {n.id for n in isolated.nodes} == {shop.CART, shop.STORE}
    assert _filter(search="nothing-like-this").nodes == []


def test_query_parsing_and_round_trip() -> None:
    query = views.parse_query({"namespace": ["shop", "pay, ops"], "probe": ["platform"],
                               "minRate": ["0.5"], "search": ["  cart "], "window": ["5m"]})
    assert query == views.MapQuery(frozenset({"shop", "pay", "ops"}), "platform", 0.5, "cart",
                                   300.0)
    again = views.parse_query({k: [v] for k, v in query.as_params().items()})
    assert again == query
    assert views.parse_window("90") == 90 and views.parse_window("500ms") == 0.5


@pytest.mark.parametrize(("params", "message"), [
    ({"minRate": ["-1"]}, "minRate"), ({"minRate": ["nan"]}, "minRate"),
    ({"window": ["0s"]}, "window"), ({"window": ["tomorrow"]}, "window"),
    ({"ns": ["shop"]}, "unknown query parameter"),
])
def test_query_errors(params: dict[str, list[str]], message: str) -> None:
    with pytest.raises(views.QueryError, match=message):
        views.parse_query(params)


def test_by_traffic_counts_attempts_then_bytes() -> None:
    order = [(e.source, e.target) for e in views.by_traffic(shop.shop_edges())]
    assert order == [(shop.FRONTEND, shop.CART), (shop.FRONTEND, shop.PAYMENTS),
                     (shop.CART, shop.STORE), (shop.CART, shop.INVENTORY),
                     (shop.FRONTEND, shop.EXTERNAL), (shop.PAYMENTS_V2, shop.BANK),
                     (shop.FRONTEND, shop.NODE1)]


def test_node_graph_frames() -> None:
    fields = views.node_graph_fields()
    data = views.node_graph_data(shop.shop_snapshot())
    for kind in ("nodes", "edges"):
        declared = [f["field_name"] for f in fields[f"{kind}_fields"]]
        assert declared[0] == "id" and all(f["type"] in ("string", "number")
                                           for f in fields[f"{kind}_fields"])
        assert all(set(row) == set(declared) for row in data[kind])
    assert {"source", "target", "mainstat", "secondarystat"} <= {
        f["field_name"] for f in fields["edges_fields"]}
    arcs = [f for f in fields["nodes_fields"] if f["field_name"].startswith("arc__")]
    assert {f["color"] for f in arcs} == {"green", "red"}
    nodes = {n["id"]: n for n in data["nodes"]}
    payments = nodes[shop.PAYMENTS]
    assert payments["mainstat"] == 5.0 and payments["secondarystat"] == pytest.approx(0.99)
    assert payments["arc__ok"] + payments["arc__failed"] == pytest.approx(1.0)
    assert nodes[shop.INVENTORY]["arc__failed"] == 1.0
    assert nodes[shop.FRONTEND]["detail__pods"] == (
        "frontend-7d4b9c6f5-abcde, frontend-7d4b9c6f5-fghij")
    edges = {e["id"]: e for e in data["edges"]}
    cart = edges[f"{shop.FRONTEND}->{shop.CART}:7070/tcp"]
    assert (cart["mainstat"], cart["detail__rtt_p50_us"], cart["detail__rtt_p99_us"],
            cart["detail__bytes_sent_per_second"], cart["color"]) == (
        10.0, 180, 950, 20000.0, "#2e9e5b")
    assert edges[f"{shop.CART}->{shop.INVENTORY}:8081/tcp"]["color"] == "#d64040"


def test_dot_export() -> None:
    dot = graph_exports.to_dot(shop.shop_snapshot())
    assert dot.startswith('digraph "test-cluster" {') and dot.rstrip().endswith("}")
    assert dot.count("subgraph cluster_") == 2  # pay, shop; externals and nodes ungrouped
    assert ('"workload:shop/frontend" -> "workload:shop/cart" [label=":7070\\n10/s",'
            in dot)
    assert '"service:pay/payments" -> "workload:pay/payments-v1" [style=dashed, label="200"]' \
        in dot
    assert '(100% failed)", penwidth=' in dot and 'color="#d64040"' in dot
    assert dot.count("{") == dot.count("}")


def test_dot_and_mermaid_escape_names() -> None:
    snapshot = shop.shop_snapshot()
    snapshot.nodes[0].name = 'we"ird<name>'
    assert 'label="we\\"ird<name>\\nDeployment"' in graph_exports.to_dot(snapshot)
    assert 'n0["we#quot;ird#lt;name#gt;<br/>Deployment"]' in graph_exports.to_mermaid(snapshot)


def test_mermaid_export() -> None:
    text = graph_exports.to_mermaid(shop.shop_snapshot())
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  subgraph ns2["shop"]' in lines and "  end" in lines
    assert '  n0 -->|":7070 10/s"| n1' in lines
    assert '  n4 -.->|"200"| n5' in lines
    links = [line for line in lines if "-->|" in line or "-.->|" in line]
    styled = {int(line.split()[1]) for line in lines if line.startswith("  linkStyle")}
    assert {links[i].split()[0] for i in styled} == {"n0", "n1"}  # payments, inventory


def test_json_export_round_trips() -> None:
    assert MapSnapshot.model_validate_json(graph_exports.to_json(shop.shop_snapshot())) == (
        shop.shop_snapshot())


def test_large_snapshot_has_the_promised_size() -> None:
    big = shop.large_snapshot()
    assert len(big.nodes) >= 500 and len(big.edges) == 1500
    assert {e.source for e in big.edges} | {e.target for e in big.edges} <= {
        n.id for n in big.nodes}
    assert big == shop.large_snapshot()  # deterministic


# --- the CLI's pure parts -----------------------------------------------------------------

def test_units() -> None:
    assert [rate(x) for x in (0.1, 5.05, 10, 250.4)] == ["0.10", "5.05", "10.0", "250"]
    assert [bytes_rate(x) for x in (20, 1500, 2.5e6, 7e9)] == [
        "20 B/s", "1.5 kB/s", "2.5 MB/s", "7.0 GB/s"]
    assert [micros(x) for x in (None, 180, 2100)] == ["-", "180µs", "2.10ms"]


def test_edge_table_empty() -> None:
    empty = shop.shop_snapshot().model_copy(update={"edges": []})
    assert edge_table(empty) == "No edges in the last 60s match.\n"


class _FakeCluster:
    def __init__(self) -> None:
        self.calls: list[dict[str, str] | None] = []

    def service_proxy_get(self, namespace: str, service: str, port: str, path: str,
                          params: dict[str, str] | None = None) -> bytes:
        assert (namespace, service, port, path) == (
            "traceprobe-system", "traceprobe-service-map", "http", "api/map")
        self.calls.append(params)
        return graph_exports.to_json(shop.shop_snapshot()).encode()

    def list_objects(self, plural: str) -> list[dict[str, Any]]:
        return []


def test_cli_sends_filters_as_the_api_query_and_watches() -> None:
    args = cli.parse_args(["map", "--ns", "shop", "--ns", "pay", "--min-rate", "1",
                           "--window", "5m", "--watch", "--interval", "2"])
    fake, out, naps = _FakeCluster(), list[str](), list[float]()
    assert cli.run_map(fake, args, out.append, sleep=naps.append, frames=3) == 0
    assert fake.calls == [{"namespace": "pay,shop", "minRate": "1", "window": "300s"}] * 3
    assert len(out) == 3 and naps == [2.0, 2.0]
    assert all(frame.startswith("Every 2s: traceprobe map") for frame in out)


def test_global_flags_work_before_and_after_the_command() -> None:
    before = cli.parse_args(["--context", "a", "-n", "tp", "map"])
    after = cli.parse_args(["map", "--context", "a", "-n", "tp"])
    for args in (before, after):
        assert (args.context, args.namespace, args.map_service) == (
            "a", "tp", "traceprobe-service-map")


def _report(name: str, age: float, probes: list[dict[str, Any]]) -> dict[str, Any]:
    beat = datetime(2025, 1, 1, 12, 0, tzinfo=UTC) - timedelta(seconds=age)
    return {"metadata": {"name": name}, "spec": {"nodeName": name},
            "status": {"heartbeatTime": beat.isoformat(), "probesAttached": "1/1",
                       "probes": probes}}


def test_status_reasons() -> None:
    probe = {"metadata": {"name": "shop", "namespace": "shop", "generation": 2},
             "status": {"observedGeneration": 1, "nodesReady": "1/1", "conditions": [
                 {"type": "Ready", "status": "True", "reason": "AllNodesReady", "message": "",
                  "lastTransitionTime": "2025-01-01T11:00:00Z"}]}}
    fresh = {"metadata": {"name": "platform"}}
    failed = {"probe": {"kind": "TraceProbe", "namespace": "shop", "name": "shop",
                        "generation": 1}, "state": "Failed", "reason": "NoKernelHeaders"}
    status = build_status([probe], [fresh], [_report("a", 5, []), _report("b", 200, [failed])],
                          now=datetime(2025, 1, 1, 12, 0, tzinfo=UTC))
    assert status.not_ready == [
        "TraceProbe shop/shop: generation 2 not yet observed by the operator (status is for 1)",
        "ClusterTraceProbe platform: no status yet (is the operator running?)",
        "node b: AgentNotReporting: no heartbeat for 200s",
        "node b: shop/shop Failed (NoKernelHeaders)"]
    text = status_text(status)
    assert "Not ready:\n  TraceProbe shop/shop: generation 2" in text
    assert [n["ready"] for n in status.nodes] == ["True", "False"]
