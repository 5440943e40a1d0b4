"""Edges of other kinds in the map view, in real headless Chromium: a UDP edge drawn by
its datagrams, and an edge with requests labelled and detailed by them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness import known_maps as shop
from harness.map_page import chromium, shop_with
from traceprobe_map.snapshot import MapEdge


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def test_a_udp_edge_shows_datagrams_each_way(browser: Any) -> None:
    """UDP has no connections: its panel gives datagrams per second each way and the
    window's counts, and the edge is drawn by them."""
    # A pair no other edge joins: a click on it cannot land on a TCP edge beside it.
    dns = MapEdge(id=f"{shop.STORE}->{shop.FRONTEND}:53/udp", source=shop.STORE,
                  target=shop.FRONTEND, port=53, transport="udp", datagrams_sent=120,
                  datagrams_received=60, datagrams_sent_per_second=120 / shop.WINDOW,
                  datagrams_received_per_second=60 / shop.WINDOW, bytes_sent=4800,
                  bytes_sent_per_second=4800 / shop.WINDOW, observed_by=["client", "server"])
    edges, _, numbers = shop_with(browser, dns)
    assert dns.id in edges
    assert {k: numbers[k] for k in ("port", "datagramsSentPerSecond",
                                    "datagramsReceivedPerSecond", "datagramsSent",
                                    "connections")} == {
        "port": "53/udp", "datagramsSentPerSecond": f"{120 / shop.WINDOW:.2f}/s",
        "datagramsReceivedPerSecond": f"{60 / shop.WINDOW:.2f}/s",
        "datagramsSent": "120 → / 60 ←", "connections": "0"}


def test_an_edge_with_requests_shows_rate_errors_and_each_sides_latency(
        browser: Any) -> None:
    """An HTTP edge: labelled by requests/s, error % and p99; its panel gives requests/s,
    errors, statuses and p50/p95/p99 as the client and as the server measured them."""
    latency = {"samples": 600, "meanMs": 3.0, "p50Ms": 2.5, "p95Ms": 8.0, "p99Ms": 12.0}
    api = MapEdge.model_validate({
        "id": f"{shop.STORE}->{shop.FRONTEND}:8080/tcp", "source": shop.STORE,
        "target": shop.FRONTEND, "port": 8080, "transport": "tcp", "connections": 3,
        "observedBy": ["client", "server"], "requests": [{
            "protocol": "http", "requests": 600, "requestsPerSecond": 600 / shop.WINDOW,
            "errors": 30, "errorRate": 0.05, "countedBy": "client",
            "byStatus": {"200": 570, "503": 30}, "byMethod": {"GET": 600},
            "latencyByClient": latency, "latencyByServer": {**latency, "p50Ms": 1.5}}]})
    edges, label, numbers = shop_with(browser, api)
    assert api.id in edges
    assert label == "10.0 req/s, 5.0 %, p99 12.00 ms"  # 600 in a 60 s window
    assert {k: numbers[k] for k in (
        "requests.0.requestsPerSecond", "requests.0.requests", "requests.0.errors",
        "requests.0.byStatus", "requests.0.countedBy", "requests.0.latencyByClient.p50Ms",
        "requests.0.latencyByClient.p99Ms", "requests.0.latencyByServer.p50Ms")} == {
        "requests.0.requestsPerSecond": "10.0/s",
        "requests.0.requests": "600", "requests.0.errors": "30 (5.0 %)",
        "requests.0.byStatus": "200: 570, 503: 30", "requests.0.countedBy": "client",
        "requests.0.latencyByClient.p50Ms": "2.50 ms",
        "requests.0.latencyByClient.p99Ms": "12.00 ms",
        "requests.0.latencyByServer.p50Ms": "1.50 ms"}
