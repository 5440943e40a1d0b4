"""The map view in real headless Chromium: launching it, and reading what a page drew
and what its panel shows (tests/cluster's browser tests)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness import known_maps as shop
from harness.map_server import local_server
from harness.prereq import missing
from traceprobe_map.snapshot import MapEdge

CHROMIUM = "/usr/bin/chromium"
# Root needs --no-sandbox; the rest keeps Chromium off the (closed) network at start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
READY = "() => window.traceprobeMap && window.traceprobeMap.ready"


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (missing() when either is absent)."""
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} not installed (make setup installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright not installed (make setup installs the dev extra)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def drawn(page: Any) -> tuple[set[str], set[str]]:
    nodes, edges = page.evaluate("""() => {
        const cy = window.traceprobeMap.cy;
        return [cy.nodes().filter((n) => !n.data('isGroup')).map((n) => n.id()),
                cy.edges('.traffic').map((e) => e.id())];
    }""")
    return set(nodes), set(edges)


def click_edge(page: Any, edge_id: str) -> None:
    """A real mouse click on an edge as drawn, at a point of it no node or label covers
    (the layout is random: the middle may lie under some other node) and inside the
    graph's box: an open panel narrows it, and an edge beyond its edge is first brought
    into view as a person would, by fitting the graph to the box."""
    x, y = page.evaluate("""(id) => {
        const cy = window.traceprobeMap.cy;
        const edge = cy.getElementById(id);
        const pick = () => {
            const a = edge.renderedSourceEndpoint(), b = edge.renderedTargetEndpoint();
            const boxes = cy.nodes().filter((n) => !n.isParent())
                .map((n) => n.renderedBoundingBox());
            const free = (p) => boxes.every((bb) => p.x < bb.x1 - 4 || p.x > bb.x2 + 4
                                                   || p.y < bb.y1 - 4 || p.y > bb.y2 + 4);
            const view = cy.container().getBoundingClientRect();
            const inside = (p) => p.x > 4 && p.x < view.width - 4 && p.y > 4
                && p.y < view.height - 4;
            const points = [0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8].map(
                (t) => ({ x: a.x + t * (b.x - a.x), y: a.y + t * (b.y - a.y) }))
                .filter(inside);
            return [points.find(free), points[0]];
        };
        let [p, any] = pick();
        if (!p) { cy.fit(undefined, 30); [p, any] = pick(); }
        p = p || any;
        const box = cy.container().getBoundingClientRect();
        return [box.left + p.x, box.top + p.y];
    }""", edge_id)
    page.mouse.click(x, y)


def panel(page: Any) -> dict[str, str]:
    return dict(page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        '#panel dd[data-field]')].map((dd) => [dd.dataset.field, dd.textContent]))"""))


def shop_with(browser: Any, edge: MapEdge) -> tuple[set[str], str, dict[str, str]]:
    """The shop's map with `edge` added, drawn: the edges drawn, `edge`'s label, and its
    panel's numbers after a real click on it."""
    snapshot = shop.shop_snapshot()
    source = shop.StaticSource(snapshot.model_copy(update={"edges": [*snapshot.edges, edge]}))
    with local_server(source) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(READY, timeout=30_000)
        edges = drawn(page)[1]
        label = str(page.evaluate("(id) => window.traceprobeMap.cy.getElementById(id)"
                                  ".data('label')", edge.id))
        click_edge(page, edge.id)
        page.wait_for_function("(id) => !document.querySelector('#panel').hidden && document"
                               ".querySelector('#panel').dataset.id === id", arg=edge.id)
        numbers = panel(page)
        context.close()
    return edges, label, numbers
