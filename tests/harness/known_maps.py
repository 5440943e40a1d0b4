"""Known service maps for the map view's tests: a small shop with exact numbers, and a
large generated cluster for the "smooth with 500+ nodes" check.

The shop, over a 60 s window (rates are the counts / 60):

    shop/frontend (Deployment) ──7070──► shop/cart (Deployment) ──5432──► shop/store (StatefulSet)
    shop/frontend ──443──► Service pay/payments ⇢ pay/payments-v1 (200), pay/payments-v2 (100)
                           (retransmits: 8 by the client, 4 by the server; RTT by each side)
    shop/frontend ──443──► external 203.0.113.10
    shop/frontend ──9100──► node node-1
    shop/cart ──8081──► Service shop/inventory: 45 refused, nothing accepted
    pay/payments-v2 ──443──► external 198.51.100.7   (seen only by the "platform" probe)
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from traceprobe_map.snapshot import (
    Backend,
    Failures,
    MapEdge,
    MapNode,
    MapSnapshot,
    Rtt,
)

WINDOW = 60.0
GENERATED_AT = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
PROBES = ["platform", "shop/shop"]

FRONTEND = "workload:shop/frontend"
CART = "workload:shop/cart"
STORE = "workload:shop/store"
PAYMENTS = "service:pay/payments"
PAYMENTS_V1 = "workload:pay/payments-v1"
PAYMENTS_V2 = "workload:pay/payments-v2"
INVENTORY = "service:shop/inventory"
EXTERNAL = "external:203.0.113.10"
BANK = "external:198.51.100.7"
NODE1 = "node:node-1"


def _edge(source: str, target: str, port: int, *, connections: int = 0, bytes_sent: int = 0,
          bytes_received: int = 0, retransmits: tuple[int, int] = (0, 0),
          failures: Failures | None = None, rtt: Rtt | None = None,
          rtt_by: tuple[Rtt, Rtt] | None = None, probes: tuple[str, ...] = ("shop/shop",),
          observed_by: tuple[str, ...] = ("client", "server"),
          backends: tuple[Backend, ...] = ()) -> MapEdge:
    """`retransmits` are (by the client, by the server) and `rtt_by` (measured by the
    client, by the server; default: all of `rtt` the client's): a side not in
    `observed_by` gets None, as the map gives it."""
    failed = failures or Failures()
    attempts = connections + failed.refused + failed.timeout  # a reset was established
    seen = ("client" in observed_by, "server" in observed_by)
    c2s, s2c = (n if side else None for n, side in zip(retransmits, seen, strict=True))
    by_client, by_server = (r if side else None for r, side in zip(
        rtt_by or (rtt or Rtt(), Rtt()), seen, strict=True))
    return MapEdge(
        id=f"{source}->{target}:{port}/tcp", source=source, target=target, port=port,
        connections=connections, connections_per_second=connections / WINDOW,
        attempts=attempts, attempts_per_second=attempts / WINDOW,
        failures=failed, failures_per_second=failed.total / WINDOW,
        error_rate=failed.total / attempts if attempts else 0.0,
        bytes_sent=bytes_sent, bytes_received=bytes_received,
        bytes_sent_per_second=bytes_sent / WINDOW,
        bytes_received_per_second=bytes_received / WINDOW,
        retransmits=(c2s or 0) + (s2c or 0), retransmits_client_to_server=c2s,
        retransmits_server_to_client=s2c, rtt=rtt or Rtt(), rtt_by_client=by_client,
        rtt_by_server=by_server, backends=list(backends),
        observed_by=list(observed_by), probes=list(probes))


def shop_nodes() -> list[MapNode]:
    return [
        MapNode(id=FRONTEND, kind="workload", name="frontend", namespace="shop",
                workload_kind="Deployment",
                pods=["frontend-7d4b9c6f5-abcde", "frontend-7d4b9c6f5-fghij"],
                nodes=["node-1", "node-2"], ports=[8080]),
        MapNode(id=CART, kind="workload", name="cart", namespace="shop",
                workload_kind="Deployment", pods=["cart-5f6d7c8b9-x1y2z"], nodes=["node-1"],
                ports=[7070]),
        MapNode(id=STORE, kind="workload", name="store", namespace="shop",
                workload_kind="StatefulSet", pods=["store-0"], nodes=["node-2"], ports=[5432]),
        MapNode(id=INVENTORY, kind="service", name="inventory", namespace="shop", ports=[8081]),
        MapNode(id=PAYMENTS, kind="service", name="payments", namespace="pay", ports=[443]),
        MapNode(id=PAYMENTS_V1, kind="workload", name="payments-v1", namespace="pay",
                workload_kind="Deployment", pods=["payments-v1-6c9d8-aaaaa"], nodes=["node-2"],
                ports=[8443]),
        MapNode(id=PAYMENTS_V2, kind="workload", name="payments-v2", namespace="pay",
                workload_kind="Deployment", pods=["payments-v2-77f5b-bbbbb"], nodes=["node-1"],
                ports=[8443]),
        MapNode(id=EXTERNAL, kind="external", name="203.0.113.10", ports=[443]),
        MapNode(id=BANK, kind="external", name="198.51.100.7", ports=[443]),
        MapNode(id=NODE1, kind="node", name="node-1", ports=[9100]),
    ]


def shop_edges() -> list[MapEdge]:
    return [
        _edge(FRONTEND, CART, 7070, connections=600, bytes_sent=1_200_000,
              bytes_received=3_000_000, retransmits=(3, 0),
              rtt=Rtt(samples=600, mean_us=210, p50_us=180, p99_us=950, max_us=1400)),
        _edge(CART, STORE, 5432, connections=120, bytes_sent=240_000, bytes_received=960_000,
              rtt=Rtt(samples=120, mean_us=95, p50_us=90, p99_us=400, max_us=510)),
        _edge(FRONTEND, PAYMENTS, 443, connections=300, bytes_sent=600_000,
              bytes_received=1_800_000, retransmits=(8, 4), failures=Failures(timeout=3),
              rtt=Rtt(samples=300, mean_us=520, p50_us=450, p99_us=2100, max_us=3300),
              rtt_by=(Rtt(samples=200, mean_us=500, p50_us=440, p99_us=2000, max_us=3300),
                      Rtt(samples=100, mean_us=560, p50_us=470, p99_us=2100, max_us=2900)),
              probes=("platform", "shop/shop"),
              backends=(Backend(id=PAYMENTS_V1, attempts=200),
                        Backend(id=PAYMENTS_V2, attempts=100))),
        _edge(FRONTEND, EXTERNAL, 443, connections=30, bytes_sent=90_000,
              bytes_received=450_000, observed_by=("client",),
              rtt=Rtt(samples=30, mean_us=14000, p50_us=12000, p99_us=35000, max_us=41000)),
        _edge(FRONTEND, NODE1, 9100, connections=6, bytes_sent=1_200, bytes_received=60_000,
              probes=("platform",), observed_by=("client",),
              rtt=Rtt(samples=6, mean_us=60, p50_us=55, p99_us=80, max_us=80)),
        _edge(CART, INVENTORY, 8081, failures=Failures(refused=45), observed_by=("client",)),
        _edge(PAYMENTS_V2, BANK, 443, connections=12, bytes_sent=24_000, bytes_received=36_000,
              probes=("platform",), observed_by=("client",),
              rtt=Rtt(samples=12, mean_us=30000, p50_us=28000, p99_us=52000, max_us=52000)),
    ]


def shop_snapshot(window_seconds: float = WINDOW) -> MapSnapshot:
    return MapSnapshot(cluster="test-cluster", generated_at=GENERATED_AT,
                       window_seconds=window_seconds, nodes=shop_nodes(), edges=shop_edges())


def large_snapshot(namespaces: int = 25, workloads_per_namespace: int = 20,
                   services_per_namespace: int = 2, externals: int = 20, edges: int = 1500,
                   seed: int = 6) -> MapSnapshot:
    """A cluster of ~560 nodes and `edges` edges, deterministic for a given seed."""
    rng = random.Random(seed)
    nodes: list[MapNode] = []
    by_namespace: list[list[str]] = []
    for n in range(namespaces):
        ns = f"team-{n:02d}"
        ids: list[str] = []
        for w in range(workloads_per_namespace):
            name = f"svc-{w:02d}"
            node_id = f"workload:{ns}/{name}"
            nodes.append(MapNode(id=node_id, kind="workload", name=name, namespace=ns,
                                 workload_kind="Deployment", pods=[f"{name}-0"],
                                 nodes=[f"node-{w % 5}"], ports=[8080]))
            ids.append(node_id)
        for s in range(services_per_namespace):
            node_id = f"service:{ns}/api-{s}"
            nodes.append(MapNode(id=node_id, kind="service", name=f"api-{s}", namespace=ns,
                                 ports=[80]))
            ids.append(node_id)
        by_namespace.append(ids)
    external_ids = [f"external:192.0.2.{i + 1}" for i in range(externals)]
    nodes += [MapNode(id=e, kind="external", name=e.split(":", 1)[1], ports=[443])
              for e in external_ids]
    seen: set[str] = set()
    result: list[MapEdge] = []
    while len(result) < edges:
        home = rng.randrange(namespaces)
        source = rng.choice(by_namespace[home][:workloads_per_namespace])
        roll = rng.random()  # mostly within a namespace, some across, a few to the outside
        if roll < 0.7:
            target = rng.choice(by_namespace[home])
        elif roll < 0.95:
            target = rng.choice(by_namespace[rng.randrange(namespaces)])
        else:
            target = rng.choice(external_ids)
        edge_id = f"{source}->{target}:8080/tcp"
        if target == source or edge_id in seen:
            continue
        seen.add(edge_id)
        connections = rng.randrange(1, 5000)
        refused = rng.randrange(0, 200) if rng.random() < 0.1 else 0
        result.append(_edge(source, target, 8080, connections=connections,
                            bytes_sent=connections * 900, bytes_received=connections * 4000,
                            retransmits=(rng.randrange(0, 20), rng.randrange(0, 5)),
                            failures=Failures(refused=refused),
                            probes=("platform",)))
    return MapSnapshot(cluster="large", generated_at=GENERATED_AT, window_seconds=WINDOW,
                       nodes=nodes, edges=result)


class StaticSource:
    """A MapSource serving one snapshot (window_seconds only relabels it)."""

    def __init__(self, snapshot: MapSnapshot, probes: list[str] | None = None) -> None:
        self.current = snapshot
        self.probe_names = probes if probes is not None else list(PROBES)
        self.windows: list[float | None] = []

    def snapshot(self, window_seconds: float | None = None) -> MapSnapshot:
        self.windows.append(window_seconds)
        if window_seconds is None:
            return self.current
        return self.current.model_copy(update={"window_seconds": window_seconds})

    def probes(self) -> list[str]:
        return list(self.probe_names)
