"""The map view in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against the map's HTTP server fed by the shop scenario, and once through the API server's
service proxy. Screenshots land in test-artifacts/ (gitignored)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness import known_maps as shop
from harness.map_page import READY, chromium
from harness.map_page import click_edge as _click_edge
from harness.map_page import drawn as _drawn
from harness.map_page import panel as _panel
from harness.map_server import local_server, proxied_map
from harness.prereq import require_root
from harness.tools import REPO

ARTIFACTS = REPO / "test-artifacts"



@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def source() -> shop.StaticSource:
    return shop.StaticSource(shop.shop_snapshot())


@pytest.fixture
def page(browser: Any, source: shop.StaticSource) -> Iterator[Any]:
    """The shop's map, drawn; console errors fail the test (CSP violations show up there)."""
    with local_server(source) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.wait_for_function(READY, timeout=30_000)
        yield page
        context.close()
        assert errors == [], f"the page logged errors: {errors}"


PAINTED = """() => [...document.querySelectorAll('#graph canvas')].reduce((sum, canvas) => {
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) painted += 1;
    return sum + painted;
}, 0)"""


def _painted(page: Any, at_least: int) -> int:
    """Pixels the graph's canvases really hold: the model alone can be right with nothing
    on screen."""
    page.wait_for_function(f"() => ({PAINTED})() >= {at_least}", timeout=15_000)
    return int(page.evaluate(PAINTED))


def _refreshed(page: Any, action: Any) -> None:
    """Run `action`, then wait until the page has drawn the answer it caused."""
    before = page.evaluate("() => window.traceprobeMap.refreshes")
    action()
    page.wait_for_function(f"() => window.traceprobeMap.refreshes > {before}", timeout=15_000)


def test_page_draws_the_scenario(page: Any) -> None:
    nodes, edges = _drawn(page)
    assert nodes == {n.id for n in shop.shop_nodes()}
    assert edges == {e.id for e in shop.shop_edges()}
    backends = page.evaluate("() => window.traceprobeMap.cy.edges('.backend').map("
                             "(e) => [e.source().id(), e.target().id()])")
    assert sorted(map(tuple, backends)) == [(shop.PAYMENTS, shop.PAYMENTS_V1),
                                            (shop.PAYMENTS, shop.PAYMENTS_V2)]
    groups = page.evaluate("() => window.traceprobeMap.cy.nodes('[?isGroup]').map("
                           "(n) => n.data('label'))")
    assert sorted(groups) == ["nodes", "outside the cluster", "pay", "shop"]
    assert page.text_content("#summary") == "10 nodes, 7 edges, 2 failing"
    colour = page.evaluate(f"() => window.traceprobeMap.cy.getElementById("
                           f"'{shop.CART}->{shop.INVENTORY}:8081/tcp').data('colour')")
    assert colour == "#d64040"
    _painted(page, 20_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "map-view-shop.png"))


def test_filters_hide_what_they_should(page: Any) -> None:
    bank_edge = f"{shop.PAYMENTS_V2}->{shop.BANK}:443/tcp"
    _refreshed(page, lambda: page.select_option("#namespace", "shop"))
    nodes, edges = _drawn(page)
    assert shop.BANK not in nodes and bank_edge not in edges and len(edges) == 6
    assert "namespace=shop" in page.evaluate("() => location.hash")
    assert page.get_attribute("#export-dot", "href") == "api/export/dot?namespace=shop"
    _refreshed(page, lambda: page.fill("#search", "store"))
    assert _drawn(page)[1] == {f"{shop.CART}->{shop.STORE}:5432/tcp"}
    _refreshed(page, lambda: page.fill("#search", ""))
    _refreshed(page, lambda: page.select_option("#probe", "platform"))
    assert _drawn(page)[1] == {f"{shop.FRONTEND}->{shop.PAYMENTS}:443/tcp",
                               f"{shop.FRONTEND}->{shop.NODE1}:9100/tcp"}
    _refreshed(page, lambda: page.fill("#minRate", "1"))
    assert _drawn(page)[1] == {f"{shop.FRONTEND}->{shop.PAYMENTS}:443/tcp"}


def test_edge_panel_shows_the_numbers(page: Any) -> None:
    _click_edge(page, f"{shop.FRONTEND}->{shop.PAYMENTS}:443/tcp")
    page.wait_for_selector("#panel:not([hidden])")
    assert page.text_content("#panel-title") == "shop/frontend → pay/payments"
    assert _panel(page) == {
        "port": "443/tcp", "connectionsPerSecond": "5.00/s", "connections": "300",
        "failuresPerSecond": "0.05/s", "failures.refused": "0", "failures.timeout": "3",
        "failures.reset": "0", "errorRate": "0.99 %", "bytesSentPerSecond": "10.0 kB/s",
        "bytesReceivedPerSecond": "30.0 kB/s", "retransmitsClientToServer": "8",
        "retransmitsServerToClient": "4", "retransmits": "12", "rtt.p50Us": "450 µs",
        "rtt.p99Us": "2.10 ms", "rtt.maxUs": "3.30 ms", "rtt.samples": "300",
        "rttByClient.p50Us": "440 µs", "rttByClient.p99Us": "2.00 ms",
        "rttByClient.samples": "200", "rttByServer.p50Us": "470 µs",
        "rttByServer.p99Us": "2.10 ms", "rttByServer.samples": "100",
        "backends": "pay/payments-v1 (200), pay/payments-v2 (100)",
        "observedBy": "client, server", "probes": "platform, shop/shop"}
    _click_edge(page, f"{shop.CART}->{shop.INVENTORY}:8081/tcp")
    page.wait_for_function("() => document.querySelector('#panel').dataset.id.includes("
                           "'inventory')")
    numbers = _panel(page)
    assert (numbers["failures.refused"], numbers["errorRate"], numbers["rtt.p50Us"]) == (
        "45", "100.0 %", "\N{EN DASH}")


def test_edge_panel_says_which_side_measured_what(page: Any) -> None:
    """A client-only edge (no agent at the external server): the server's figures read
    "not observed", not a zero that looks measured; the client's are its own."""
    _click_edge(page, f"{shop.FRONTEND}->{shop.EXTERNAL}:443/tcp")
    page.wait_for_function("() => !document.querySelector('#panel').hidden && document"
                           ".querySelector('#panel').dataset.id.includes('203.0.113.10')")
    numbers = _panel(page)
    labels = page.evaluate("() => [...document.querySelectorAll('#panel dt')].map("
                           "(dt) => dt.textContent)")
    assert {k: numbers[k] for k in (
        "retransmitsClientToServer", "retransmitsServerToClient", "retransmits",
        "rttByClient.p50Us", "rttByClient.samples", "rttByServer", "rtt.samples")} == {
        "retransmitsClientToServer": "0", "retransmitsServerToClient": "not observed",
        "retransmits": "0", "rttByClient.p50Us": "12.00 ms", "rttByClient.samples": "30",
        "rttByServer": "not observed", "rtt.samples": "30"}
    assert "rttByServer.samples" not in numbers
    assert {"by the client → server", "by the server → client",
            "measured by the server"} <= set(labels)


def test_node_panel_lists_pods_nodes_and_ports(page: Any) -> None:
    x, y = page.evaluate(f"""() => {{
        const cy = window.traceprobeMap.cy;
        const p = cy.getElementById('{shop.FRONTEND}').renderedPosition();
        const box = cy.container().getBoundingClientRect();
        return [box.left + p.x, box.top + p.y];
    }}""")
    page.mouse.click(x, y)
    page.wait_for_selector("#panel:not([hidden])")
    fields = _panel(page)
    assert fields["pods"] == "frontend-7d4b9c6f5-abcde, frontend-7d4b9c6f5-fghij"
    assert (fields["nodes"], fields["ports"]) == ("node-1, node-2", "8080")
    assert fields["out"] == "4 edges, 15.7/s"  # 10 + 5.05 + 0.5 + 0.1 attempts/s


def test_live_refresh_keeps_the_layout(page: Any, source: shop.StaticSource) -> None:
    positions = page.evaluate("() => Object.fromEntries(window.traceprobeMap.cy.nodes()"
                              ".filter((n) => !n.isParent()).map((n) => [n.id(), n.position()]))")
    _click_edge(page, f"{shop.CART}->{shop.STORE}:5432/tcp")
    page.wait_for_selector("#panel:not([hidden])")
    assert _panel(page)["connectionsPerSecond"] == "2.00/s"
    busier = shop.shop_snapshot()
    cart_store = next(e for e in busier.edges if e.target == shop.STORE)
    cart_store.connections, cart_store.connections_per_second = 240, 4.0
    newcomer = shop.shop_snapshot().nodes[1].model_copy(update={
        "id": "workload:shop/checkout", "name": "checkout"})
    busier.nodes.append(newcomer)
    busier.edges.append(cart_store.model_copy(update={
        "id": "workload:shop/checkout->workload:shop/store:5432/tcp",
        "source": newcomer.id}))
    source.current = busier
    started = time.monotonic()
    page.wait_for_function("() => window.traceprobeMap.cy.getElementById("
                           "'workload:shop/checkout').nonempty()", timeout=15_000)
    print(f"\nlive refresh picked up the change after {time.monotonic() - started:.1f}s")
    after = page.evaluate("() => Object.fromEntries(window.traceprobeMap.cy.nodes()"
                          ".filter((n) => !n.isParent()).map((n) => [n.id(), n.position()]))")
    for node_id, where in positions.items():
        assert after[node_id] == pytest.approx(where, abs=0.5), f"{node_id} moved"
    assert _panel(page)["connectionsPerSecond"] == "4.00/s"  # the open panel follows


def test_500_node_graph_renders(browser: Any) -> None:
    big = shop.large_snapshot()
    with local_server(shop.StaticSource(big)) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        started = time.monotonic()
        page.goto(url)
        page.wait_for_function(READY, timeout=60_000)
        elapsed = time.monotonic() - started
        layout_ms, render_ms, error = page.evaluate(
            "() => [window.traceprobeMap.layoutMs, window.traceprobeMap.renderMs,"
            " window.traceprobeMap.error]")
        nodes, edges = _drawn(page)
        print(f"\n{len(big.nodes)} nodes, {len(big.edges)} edges: page ready in {elapsed:.2f}s"
              f" (layout {layout_ms:.0f} ms, render incl. layout {render_ms:.0f} ms)")
        assert error is None
        assert nodes == {n.id for n in big.nodes} and edges == {e.id for e in big.edges}
        _painted(page, 50_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "map-view-large.png"))
        context.close()


def test_page_works_through_the_service_proxy(browser: Any, control_plane: Any) -> None:
    require_root("serving on the pod bridge's address")
    with proxied_map(control_plane, shop.StaticSource(shop.shop_snapshot())) as proxied:
        context = browser.new_context(ignore_https_errors=True, extra_http_headers={
            "Authorization": f"Bearer {control_plane.admin_token}"})
        page = context.new_page()
        page.goto(proxied.proxy_url + "#namespace=pay")
        page.wait_for_function(READY, timeout=30_000)
        assert page.evaluate("() => window.traceprobeMap.error") is None
        assert _drawn(page)[1] == {f"{shop.FRONTEND}->{shop.PAYMENTS}:443/tcp",
                                   f"{shop.PAYMENTS_V2}->{shop.BANK}:443/tcp"}
        context.close()
