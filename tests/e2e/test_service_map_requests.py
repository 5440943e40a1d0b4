"""Requests on the whole path: a client pod on one simulated node, an HTTP server on
another, two cluster-mode agents with `http` on (real eBPF), the real service map and a
real Collector. The map counts each request once though both sides report it, keeps
each side's latency, and exports the semantic-convention histograms and Grafana's
service-graph series by requests.

Truth: what the client got, request by request (tests/harness/http_traffic.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from harness.install import apply_probe, install
from harness.map_world import MapWorld
from harness.pods import PodFactory
from harness.traffic_control import http_call, http_serve, stop
from harness.waiting import wait_until

CLUSTER = "e2e-map-requests"  # the collector is shared: only this test's exports count
PORT = 8080


@pytest.fixture
def world(control_plane: Any, collector: Any, bpf_ready: None,
          tmp_path: Any) -> Iterator[tuple[MapWorld, PodFactory, PodFactory]]:
    install(control_plane)
    n1 = PodFactory(control_plane.api_client(), node="rq-node-1")
    n2 = PodFactory(control_plane.api_client(), node="rq-node-2")
    w = MapWorld(control_plane, tmp_path)
    try:
        yield w, n1, n2
    finally:
        w.stop()
        n2.cleanup()
        n1.cleanup()


def _exported(collector: Any, name: str) -> Counter[tuple[str, int]]:
    """(method, status) -> requests in the newest cumulative point of each series."""
    newest: dict[tuple[str, int], int] = {}
    for p in collector.find(name, **{"k8s.cluster.name": CLUSTER, "k8s.src.name": "shopper"}):
        key = (p.attributes["http.request.method"], int(p.attributes["http.response.status_code"]))
        newest[key] = max(newest.get(key, 0), int(p.extra["count"]))
    return Counter(newest)


def test_requests_between_nodes_are_counted_once_and_exported(
        world: tuple[MapWorld, PodFactory, PodFactory], collector: Any) -> None:
    w, n1, n2 = world
    client = n1.create("shopper-5f-x", "shop", owner=("Deployment", "shopper"))
    server = n2.create("catalog-0", "shop", owner=("StatefulSet", "catalog"))
    w.start_map(collector.grpc_endpoint, "--service-graph", cluster=CLUSTER)
    apply_probe(w.cp, "web", "shop", "{interval: 1s, probes: [connections, bytes, http]}")
    for node in ("rq-node-1", "rq-node-2"):
        w.start_agent(node)
    web = http_serve(server, PORT)
    edge_id = ("workload:shop/shopper", "workload:shop/catalog", PORT)

    def edge() -> dict[str, Any] | None:
        return next((e for e in w.api_map()["edges"]
                     if (e["source"], e["target"], e["port"]) == edge_id), None)

    def warm() -> bool:  # both agents attached: a warm-up request seen from both sides
        http_call(client, server.ip, PORT, "GET:/size/1")
        found = edge()
        return bool(found and found["observedBy"] == ["client", "server"] and found["requests"]
                    and found["requests"][0]["latencyByServer"]
                    and found["requests"][0]["latencyByClient"])

    try:
        wait_until(warm, timeout=90, what="agents attached and reporting requests")
        time.sleep(2)  # the last warm-up's records are in; count from the map's base
        found = edge()
        assert found is not None
        base = found["requests"][0]
        before = Counter({int(s): n for s, n in base["byStatus"].items()})
        got = http_call(client, server.ip, PORT, *(["GET:/size/100"] * 20
                                                   + ["GET:/status/404"] * 5
                                                   + ["POST:/echo:50000"] * 3
                                                   + ["GET:/status/503"] * 2))
    finally:
        stop(web)
    truth = Counter(r["status"] for r in got)
    assert truth == Counter({200: 23, 404: 5, 503: 2})
    want = {str(s): n for s, n in (before + truth).items()}

    def arrived() -> dict[str, Any] | None:
        found = edge()
        return found if found and found["requests"][0]["byStatus"] == want else None

    try:
        http = wait_until(arrived, timeout=30, what=f"the map's requests at {want}")["requests"][0]
    except AssertionError:
        current = edge()
        assert current and current["requests"][0]["byStatus"] == want  # shows what arrived
        raise
    total = sum(want.values())
    assert (http["protocol"], http["countedBy"], http["requests"]) == ("http", "client", total)
    assert http["errors"] == 7  # the client's 404s and 503s
    # Each side timed every one of these (a warm-up may predate the other side's agent).
    for side in ("latencyByClient", "latencyByServer"):
        assert http[side]["samples"] - base[side]["samples"] == 30, (side, http, base)
    # The client's time to first byte holds the server's time to answer: its p50 is not
    # below the server's by more than a bucket's width (25%).
    assert http["latencyByClient"]["p50Ms"] >= 0.75 * http["latencyByServer"]["p50Ms"] > 0
    # Cumulative from the map's start: every request each side saw, its warm-ups too.
    sides = {"latencyByClient": "http.client.request.duration",
             "latencyByServer": "http.server.request.duration"}
    for side, name in sides.items():
        wanted = Counter({("GET", 200): http[side]["samples"] - 10, ("POST", 200): 3,
                          ("GET", 404): 5, ("GET", 503): 2})

        def complete(name: str = name, wanted: Counter[tuple[str, int]] = wanted) -> bool:
            return _exported(collector, name) == wanted

        try:
            wait_until(complete, timeout=60, what=f"{side} histograms at the collector")
        except AssertionError:
            assert _exported(collector, name) == wanted
            raise
    graph = collector.find("traces_service_graph_request_total",
                           **{"k8s.cluster.name": CLUSTER, "client": "shopper"})
    assert max(p.value for p in graph) == total  # requests, not connections
