"""The whole path on real parts: netns pods on two simulated nodes, real eBPF in
two cluster-mode agents, OTLP to the real service map, which names both ends
from the real API server and exports to a real Collector.

Truth comes from the traffic generator (connections it completed or saw
refused) and from the kernel's own iptables counters for the DNAT split.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.install import apply_probe, install
from harness.map_world import MapWorld
from harness.pods import PodFactory
from harness.services import ServiceFactory
from harness.traffic_control import PY, dial, serve, stop, udp_call, udp_echo
from harness.truth import BACKENDS, CONNS, DATAGRAMS, FAILURES, collector_edges, dnat_split
from harness.waiting import wait_until

DNS = str(Path(__file__).resolve().parents[1] / "harness" / "dns_server.py")
CLUSTER = "e2e-service-map"  # the collector is shared: only this test's exports count


@pytest.fixture
def world(control_plane: Any, collector: Any, bpf_ready: None,
          tmp_path: Any) -> Iterator[tuple[MapWorld, PodFactory, PodFactory, ServiceFactory]]:
    install(control_plane)
    n1 = PodFactory(control_plane.api_client(), node="sm-node-1")
    n2 = PodFactory(control_plane.api_client(), node="sm-node-2")  # claims the node IP last
    services = ServiceFactory(control_plane.api_client())
    w = MapWorld(control_plane, tmp_path)
    try:
        yield w, n1, n2, services
    finally:
        w.stop()
        services.cleanup()
        n2.cleanup()
        n1.cleanup()


def _resolve_and_dial(pod: Any, server: str, name: str, expected: str) -> dict[str, Any]:
    """As an app does: look the name up, then connect to the address it was given."""
    got = pod.run([PY, DNS, "resolve", server, name]).stdout
    assert json.loads(got) == {"addresses": [expected]}, got
    return dial(pod, expected, 443, 10, "--count", "2")


def _edges(collector: Any, name: str, **attrs: Any) -> dict[tuple[str, str, int], float]:
    return collector_edges(collector, name, CLUSTER, ("shop", "pay"), **attrs)


def test_service_map_end_to_end(world: tuple[MapWorld, PodFactory, PodFactory, ServiceFactory],
                                collector: Any) -> None:
    w, n1, n2, services = world
    frontend = n1.create("frontend-5d8f-x1", "shop", owner=("Deployment", "frontend"))
    shipper = n1.create("log-shipper-a1", "shop", owner=("DaemonSet", "log-shipper"))
    store = n2.create("store-0", "shop", owner=("StatefulSet", "store"))
    metrics = n2.create("node-metrics-b2", "shop", owner=("DaemonSet", "node-metrics"),
                        host_network=True)
    v1 = n2.create("payments-v1-7c-a", "pay", {"app": "payments"}, ("Deployment", "payments-v1"))
    v2 = n1.create("payments-v2-9f-b", "pay", {"app": "payments"}, ("Deployment", "payments-v2"))
    cart = n2.create("cart-66-c", "shop", owner=("Deployment", "cart"))
    outside = n1.create_external("partner-api")
    named = n1.create_external("partner-named")  # reached by a name, looked up first
    dns = n1.create_external("dns")
    svc = services.create("payments", "pay", [v1, v2], 80, 8080)

    w.start_map(collector.grpc_endpoint, cluster=CLUSTER)
    apply_probe(w.cp, "map", "shop", "{interval: 1s}")
    apply_probe(w.cp, "map", "pay", "{interval: 1s}")  # each team observes its own pods
    for node in ("sm-node-1", "sm-node-2"):
        w.start_agent(node)
    servers = [serve(store, 5432, 100), serve(v1, 8080, 10), serve(v2, 8080, 10),
               serve(outside, 443, 1000), serve(named, 443, 10),
               dns.popen([PY, DNS, "serve", "53", f"api.partner.example={named.ip}"],
                         stdout=subprocess.DEVNULL), serve(cart, 8080, 10)]
    try:
        # Both agents compiled and attached: a warm-up edge shows up in the map.
        def warm() -> bool:
            dial(shipper, store.ip, 5432, 1)
            return any(e["source"] == "workload:shop/log-shipper" for e in w.api_map()["edges"])

        wait_until(warm, timeout=90, what="agents attached and reporting to the map")
        time.sleep(2)  # the warm-up's last dials are in; count from here
        base_split = dnat_split(svc.chain)
        truth = {
            "store": dial(frontend, store.ip, 5432, 200, "--count", "3"),
            "payments": dial(frontend, svc.cluster_ip, 80, 20, "--count", "6"),
            "external": dial(frontend, outside.ip, 443, 10, "--count", "2"),
            "named": _resolve_and_dial(frontend, dns.ip, "api.partner.example", named.ip),
            "refused": dial(frontend, store.ip, 5433, 1, "--count", "2"),
            "metrics": dial(metrics, store.ip, 5432, 10, "--count", "2"),
            "cart": dial(frontend, cart.ip, 8080, 10, "--count", "2"),
        }
        split = [a - b for a, b in zip(dnat_split(svc.chain), base_split, strict=True)]
        # The cart calls are drained and stamped before the address changes hands.
        wait_until(lambda: any(e["target"] == "workload:shop/cart" and e["connections"] == 2
                               for e in w.api_map()["edges"]), timeout=30,
                   what="the calls to the old cart pod at the map")
        # The cart pod goes; a CronJob's pod in another namespace gets its address.
        n2.delete(cart)
        report = n2.create("report-2900-x", "pay", owner=("CronJob", "report"), reuse_ip_of=cart)
        stop(servers.pop())
        servers.append(serve(report, 8080, 10))
        truth["report"] = dial(frontend, report.ip, 8080, 10, "--count", "1")
    finally:
        stop(*servers)
    assert truth["refused"]["failed"] == {"ECONNREFUSED": 2}
    completed = {k: t["completed"] for k, t in truth.items()}
    assert completed == {"store": 3, "payments": 6, "external": 2, "named": 2, "refused": 0,
                         "metrics": 2, "cart": 2, "report": 1}, truth
    assert sum(split) == 6

    ext = f"/{outside.ip}"
    expected = {
        ("shop/frontend", "shop/store", 5432): 3,
        ("shop/frontend", "pay/payments", 80): 6,
        ("shop/frontend", ext.lstrip("/"), 443): 2,
        ("shop/frontend", "api.partner.example", 443): 2,  # by the DNS answer, not the IP
        ("shop/node-metrics", "shop/store", 5432): 2,
        ("shop/frontend", "shop/cart", 8080): 2,
        ("shop/frontend", "pay/report", 8080): 1,
    }

    def exported() -> dict[tuple[str, str, int], float]:
        got = _edges(collector, CONNS)
        got.pop(("shop/log-shipper", "shop/store", 5432), None)  # warm-up: count unknown
        return got

    try:
        wait_until(lambda: exported() == expected, timeout=60,
                   what="exactly the expected edges at the collector")
    except AssertionError:
        assert exported() == expected  # shows what did arrive
        raise
    refused = _edges(collector, FAILURES, **{"failure.kind": "refused"})
    assert refused == {("shop/frontend", "shop/store", 5433): 2}
    backends = wait_until(lambda: _edges(collector, BACKENDS) or None, what="backend split")
    assert backends == {k: v for k, v in {
        ("shop/frontend", "pay/payments>payments-v1", 80): split[0],
        ("shop/frontend", "pay/payments>payments-v2", 80): split[1]}.items() if v}

    # Attributes as users query them: semantic conventions + the k8s.src/dst family.
    point = collector.find(CONNS, **{"k8s.cluster.name": CLUSTER, "k8s.src.name": "frontend",
                                     "k8s.dst.name": "store"})[-1]
    assert point.attributes["k8s.src.owner.type"] == "Deployment"
    assert point.attributes["k8s.dst.owner.type"] == "StatefulSet"
    assert point.attributes["k8s.dst.kind"] == "workload"
    assert point.attributes["network.transport"] == "tcp"
    assert point.resource["k8s.cluster.name"] == CLUSTER
    ours = {"k8s.cluster.name": CLUSTER}
    ext_point = collector.find(CONNS, **ours, **{"k8s.dst.name": outside.ip})[-1]
    assert ext_point.attributes["k8s.dst.kind"] == "external"
    svc_point = collector.find(CONNS, **ours, **{"k8s.dst.name": "payments"})[-1]
    assert svc_point.attributes["k8s.dst.kind"] == "service"

    # The map view's API shows the same edges, both sides seen where both have agents.
    snapshot = w.api_map()
    edges = {(e["source"], e["target"], e.get("port")): e for e in snapshot["edges"]}
    store_edge = edges[("workload:shop/frontend", "workload:shop/store", 5432)]
    assert store_edge["observedBy"] == ["client", "server"]
    assert store_edge["bytesSent"] == 3 * 200 and store_edge["bytesReceived"] == 3 * 100
    assert store_edge["probes"] == ["shop/map"]
    metrics_edge = edges[("workload:shop/node-metrics", "workload:shop/store", 5432)]
    to_store = [(e["source"], e["observedBy"]) for e in snapshot["edges"]
                if e["target"] == "workload:shop/store"]
    assert metrics_edge["observedBy"] == ["client", "server"], to_store  # hostNetwork: one edge
    assert not [e for e in snapshot["edges"] if e["source"].startswith("node:")
                and e["target"] == "workload:shop/store"]
    assert not [e for e in snapshot["edges"] if e["target"].startswith("workload:pay/payments-")]
    # The Service edge's parts are its attempts, as kube-proxy's iptables counters split them.
    pay_edge = edges[("workload:shop/frontend", "service:pay/payments", 80)]
    assert (pay_edge["attempts"], pay_edge["backendsFrom"], pay_edge["backendsUnknown"]) == (
        6, "conntrack", 0), pay_edge
    assert {b["id"]: b["attempts"] for b in pay_edge["backends"]} == {
        f"workload:pay/payments-v{i + 1}": n for i, n in enumerate(split) if n}, pay_edge


def test_udp_between_nodes_is_one_edge_with_datagrams_each_way(
        world: tuple[MapWorld, PodFactory, PodFactory, ServiceFactory], collector: Any) -> None:
    """A probe with `udp` on: a resolver pod on one node and its server on another, both
    agents on the sock_ops core. The map draws one udp edge between the workloads, seen
    from both sides, with the datagrams and bytes the two processes exchanged, and
    exports the datagrams by direction."""
    w, n1, n2, _ = world
    caller = n1.create("resolver-7d-x", "shop", owner=("Deployment", "resolver"))
    server = n2.create("names-0", "shop", owner=("StatefulSet", "names"))
    ip6 = server.ip6
    assert ip6, "the pod has no IPv6 address"
    w.start_map(collector.grpc_endpoint, cluster=CLUSTER)
    apply_probe(w.cp, "udp", "shop", "{interval: 1s, probes: [connections, udp]}")
    for node in ("sm-node-1", "sm-node-2"):
        w.start_agent(node)
    sizes = [40, 512, 3000]  # DNS-like, and one past the MTU
    echo = udp_echo(server, 5353, 1_000_000)  # warm-up and measured calls alike

    def warm() -> bool:  # both agents attached: a warm-up flow is seen from both sides
        udp_call(caller, server.ip, ip6, 5353, [1])
        return any(e["transport"] == "udp" and e["observedBy"] == ["client", "server"]
                   for e in w.api_map()["edges"])

    try:
        wait_until(warm, timeout=90, what="agents attached and reporting UDP to the map")
        time.sleep(2)  # the warm-up's last datagrams are in; count from the map's base
        edge_id = ("workload:shop/resolver", "workload:shop/names", 5353)

        def udp_edge() -> dict[str, Any]:
            return next(e for e in w.api_map()["edges"] if e["transport"] == "udp"
                        and (e["source"], e["target"], e["port"]) == edge_id)

        base = udp_edge()
        done = udp_call(caller, server.ip, ip6, 5353, sizes)
    finally:
        stop(echo)
    sent = done["v4"][0] + done["v6"][0]
    received = done["v4"][1] + done["v6"][1]
    figures = ("datagramsSent", "datagramsReceived", "bytesSent", "bytesReceived")
    want = tuple(base[f] + n for f, n in zip(
        figures, (2 * len(sizes), 2 * len(sizes), sent, received), strict=True))

    def arrived() -> dict[str, Any] | None:
        edge = udp_edge()
        return edge if tuple(edge[f] for f in figures) == want else None

    try:
        got = wait_until(arrived, timeout=30, what=f"the udp edge at {want}")
    except AssertionError:
        assert tuple(udp_edge()[f] for f in figures) == want  # shows what did arrive
        raise
    assert got["observedBy"] == ["client", "server"] and got["connections"] == 0
    assert got["datagramsSentPerSecond"] > 0
    # The export is cumulative from the map's start: the warm-up's datagrams and these,
    # as many as the map's window holds.
    def exported() -> float | None:
        return _edges(collector, DATAGRAMS, **{"network.io.direction": "transmit"}).get(
            ("shop/resolver", "shop/names", 5353))

    try:
        wait_until(lambda: exported() == want[0], timeout=60, what="datagrams at the collector")
    except AssertionError:
        assert exported() == want[0]
        raise
