"""A known traffic matrix among real pods on the real node, checked against
independent truth: what the traffic generator completed or saw fail (tests/harness/
traffic.py, the simulated tiers' truth too) and, for the Service split, the peers each
server logged as it accepted them. The chart runs from `helm install`; the map's /api/map and
what a real Collector received must both show it.

    matrix/frontend (Deployment) ──80──► Service matrix/api ⇢ matrix/api (2 pods),
                                                             matrix/api-canary (1 pod)
    matrix/frontend ──5432──► matrix-data/store (StatefulSet, by its headless DNS name)
    matrix/frontend ──5433──► matrix-data/store: refused
    matrix/frontend ──80──► Service matrix/flaky: every connection reset
    matrix/hostnet (hostNetwork Deployment) ──80──► Service matrix/api
    matrix/batch (Job) ──80──► Service matrix/api
    matrix/frontend ──5353/udp──► matrix-data/names (datagrams to its pod IP)
    matrix/frontend ──80──► Service matrix/catalog ⇢ matrix/catalog: HTTP requests
    between two rounds the frontend pod and one api pod are deleted and replaced.
The probe counts UDP too: the frontend's lookups at CoreDNS are a UDP edge of their own;
and HTTP requests, which the catalog's real HTTP server answered.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import node_shop as shop
from harness.collector import Collector
from harness.node import RealNode
from harness.node_release import ChartRelease, all_ready, apply, running
from harness.truth import BACKENDS, BYTES, CONNS, DATAGRAMS, FAILURES, collector_edges
from harness.waiting import wait_until
from traceprobe_api.probe import DEFAULT_KINDS

pytestmark = pytest.mark.timeout(900)
CLUSTER = "node-matrix"
APP, DATA = "matrix", "matrix-data"
API = f"api.{APP}.svc.cluster.local"
STORE = f"store-0.store.{DATA}.svc.cluster.local"
FLAKY = f"flaky.{APP}.svc.cluster.local"
FRONTEND, HOSTNET, BATCH = (f"workload:{APP}/{n}" for n in ("frontend", "hostnet", "batch"))
API_SVC, FLAKY_SVC = f"service:{APP}/api", f"service:{APP}/flaky"
CATALOG = f"catalog.{APP}.svc.cluster.local"
CATALOG_SVC = f"service:{APP}/catalog"
CATALOG_CALLS = ["GET:/size/300"] * 6 + ["GET:/status/404"] * 2 + ["POST:/echo:20000"] * 2 \
    + ["GET:/status/500"]
BACKENDS_OF_API = {f"workload:{APP}/api": "api", f"workload:{APP}/api-canary": "api-canary"}
STORE_POD = f"workload:{DATA}/store"
NAMES_POD = f"workload:{DATA}/names"
UDP_SIZES = [40, 512, 1400, 3000]  # DNS-like, and one past the MTU
WARMUP = f"workload:{APP}/warmup"
PODS = 8  # running in APP: api x2, api-canary, flaky, frontend, warmup, hostnet, catalog


def _manifests(image: str) -> list[dict[str, Any]]:
    idle = shop.IDLE
    return [
        shop.namespace(APP), shop.namespace(DATA),
        shop.traffic_configmap(APP), shop.traffic_configmap(DATA),
        shop.cluster_probe("matrix", [APP, DATA], probes=[*DEFAULT_KINDS, "udp", "http"]),
        shop.deployment("api", APP, image, shop.serve(8080, 100), replicas=2, port=8080,
                        labels={"tier": "api"}),
        shop.deployment("api-canary", APP, image, shop.serve(8080, 100), port=8080,
                        labels={"tier": "api"}),
        shop.service("api", APP, 80, 8080, selector={"tier": "api"}),
        shop.deployment("flaky", APP, image, shop.serve(8081, 0, "--reset"), port=8081),
        shop.service("flaky", APP, 80, 8081),
        shop.statefulset("store", DATA, image, shop.serve(5432, 50), 5432),
        shop.service("store", DATA, 5432, 5432, headless=True),
        shop.deployment("names", DATA, image, shop.udp_echo(5353), port=5353),
        shop.deployment("catalog", APP, image, shop.http_serve(8080), port=8080),
        shop.service("catalog", APP, 80, 8080),
        shop.deployment("frontend", APP, image, idle),
        shop.deployment("warmup", APP, image, idle),
        shop.deployment("hostnet", APP, image, idle, host_network=True),
    ]


@dataclass
class Matrix:
    node: RealNode
    release: ChartRelease
    collector: Collector
    truth: dict[str, dict[str, Any]] = field(default_factory=dict)
    split: dict[str, int] = field(default_factory=dict)  # api workload -> accepted
    peers: list[str] = field(default_factory=list)  # addresses the api servers saw
    udp: dict[str, Any] = field(default_factory=dict)  # udp-call's bytes each way
    http: list[dict[str, Any]] = field(default_factory=list)  # each request and its status
    _logs: dict[str, str] = field(default_factory=dict)  # pod -> its log, deleted ones too

    def pod(self, app: str, ns: str = APP) -> str:
        (name,) = [str(p["metadata"]["name"]) for p in running(self.node, ns, f"app={app}")]
        return name

    def dial(self, app: str, host: str, port: int, request: int, *extra: str
             ) -> dict[str, Any]:
        """Run the generator in the app's pod; its JSON line is the truth."""
        return self.run(app, shop.dial(host, port, request, *extra))

    def run(self, app: str, command: list[str]) -> dict[str, Any]:
        out = self.node.kubectl("exec", "-n", APP, self.pod(app), "--", *command).stdout
        return dict(json.loads(out))

    def keep_logs(self, app: str) -> None:
        for pod in running(self.node, APP, f"app={app}"):
            name = pod["metadata"]["name"]
            self._logs[name] = self.node.kubectl("logs", "-n", APP, name).stdout

    def accepted(self, app: str) -> list[str]:
        """Peers accepted by every pod the workload has had (pod names start with it)."""
        return [p for pod, log in self._logs.items()
                if pod.rsplit("-", 2)[0] == app for p in shop.peers(log)]


def _ready(node: RealNode, ns: str, count: int) -> bool:
    pods = running(node, ns, "app")
    return len(pods) == count and all_ready(pods)


def _run_matrix(m: Matrix, image: str) -> None:
    node = m.node
    # The agent attached and the map names the pods: a warm-up call shows on the map.
    def warm() -> bool:
        m.dial("warmup", STORE, 5432, 1)
        return any(e["source"] == WARMUP for e in m.release.api_map()["edges"])

    wait_until(warm, 180, "the agent attached and the map naming pods", diagnose=m.release.diagnose)
    time.sleep(3)  # the warm-up's last calls are flushed; count from here
    m.truth["api-1"] = m.dial("frontend", API, 80, 120, "--count", "4")
    m.truth["store"] = m.dial("frontend", STORE, 5432, 200, "--count", "3")
    m.truth["refused"] = m.dial("frontend", STORE, 5433, 1, "--count", "2")
    m.truth["reset"] = m.dial("frontend", FLAKY, 80, 100, "--count", "2", "--hold", "0.3")
    m.truth["hostnet"] = m.dial("hostnet", API, 80, 30, "--count", "3")
    (names,) = running(node, DATA, "app=names")
    m.udp = m.run("frontend", shop.udp_call(names["status"]["podIP"], 5353, UDP_SIZES))
    m.http = json.loads(node.kubectl("exec", "-n", APP, m.pod("frontend"), "--",
                                     *shop.http_call(CATALOG, 80, *CATALOG_CALLS)).stdout)
    # A pod deleted and replaced: the frontend and one api pod get successors.
    old = {m.pod("frontend"), running(node, APP, "app=api")[0]["metadata"]["name"]}
    m.keep_logs("api")
    node.kubectl("delete", "pod", "-n", APP, "--wait=false", *old)
    wait_until(lambda: _ready(node, APP, PODS) and not old & {
        p["metadata"]["name"] for p in running(node, APP, "app")}, 120, "the replacements ready",
        diagnose=node.diagnose_pods)
    m.truth["api-2"] = m.dial("frontend", API, 80, 120, "--count", "4")
    apply(node, shop.job("batch", APP, image, shop.dial(API, 80, 10, "--count", "3")))
    node.kubectl("wait", "-n", APP, "--for=condition=complete", "job/batch", "--timeout=50s")
    m.truth["batch"] = json.loads(node.kubectl("logs", "-n", APP, "job/batch").stdout)
    for app in BACKENDS_OF_API.values():
        m.keep_logs(app)
        m.split[app] = len(m.accepted(app))
        m.peers += m.accepted(app)


@pytest.fixture(scope="module")
def matrix(real_node: RealNode, world_dir: Path) -> Iterator[Matrix]:
    collector = Collector(world_dir / "matrix-collector", host=real_node.node_ip)
    collector.start()
    release = ChartRelease(real_node, CLUSTER)
    m = Matrix(real_node, release, collector)
    try:
        release.install(f"serviceMap.export.endpoint={collector.grpc_endpoint}",
                        "serviceMap.export.intervalSeconds=2")
        image = real_node.image("workload")
        apply(real_node, *_manifests(image))
        wait_until(lambda: _ready(real_node, APP, PODS) and _ready(
            real_node, DATA, 2), 180, "the matrix pods ready", diagnose=real_node.diagnose_pods)
        _run_matrix(m, image)
        yield m
    finally:
        release.uninstall()
        real_node.kubectl("delete", "namespace", APP, DATA, "--wait=false", check=False)
        collector.stop()


def test_the_generator_did_what_the_matrix_says(matrix: Matrix) -> None:
    completed = {k: t["completed"] for k, t in matrix.truth.items()}
    assert completed == {"api-1": 4, "store": 3, "refused": 0, "reset": 0, "hostnet": 3,
                         "api-2": 4, "batch": 3}, matrix.truth
    assert matrix.truth["refused"]["failed"] == {"ECONNREFUSED": 2}
    assert sum(matrix.truth["reset"]["failed"].values()) == 2
    assert set(matrix.truth["reset"]["failed"]) <= {"ECONNRESET", "ENOTCONN", "EPIPE"}
    # The api servers accepted every call to the Service, each from one of its backends.
    assert sum(matrix.split.values()) == 4 + 3 + 4 + 3, (matrix.split, matrix.peers)


EXPECTED = {  # (source, target, port): connections, as the generator counted them
    (FRONTEND, API_SVC, 80): 8,
    (FRONTEND, STORE_POD, 5432): 3,
    (FRONTEND, FLAKY_SVC, 80): 2,
    (HOSTNET, API_SVC, 80): 3,
    (BATCH, API_SVC, 80): 3,
    (FRONTEND, CATALOG_SVC, 80): 1,  # one keep-alive connection for every request
}
REFUSED = {(FRONTEND, STORE_POD, 5433): 2}


def _ours(edge: dict[str, Any]) -> bool:
    """Edges that touch the matrix's pods, the warm-up's aside."""
    ends = (edge["source"], edge["target"])
    return WARMUP not in ends and any(f":{APP}/" in e or f":{DATA}/" in e for e in ends)


def _drawn(matrix: Matrix, transport: str = "tcp") -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(e["source"], e["target"], e["port"]): e
            for e in matrix.release.api_map()["edges"]
            if _ours(e) and e["transport"] == transport}


def test_the_map_draws_exactly_the_matrix(matrix: Matrix) -> None:
    expected = {**EXPECTED, **{k: 0 for k in REFUSED}}

    def counts() -> dict[tuple[str, str, int], int]:
        return {k: e["connections"] for k, e in _drawn(matrix).items()}

    try:
        wait_until(lambda: counts() == expected, 60, "exactly the matrix's edges on the map")
    except AssertionError:
        assert counts() == expected, matrix.release.diagnose()
    edges = _drawn(matrix)
    store = edges[(FRONTEND, STORE_POD, 5432)]
    assert (store["bytesSent"], store["bytesReceived"]) == (3 * 200, 3 * 50)
    assert store["observedBy"] == ["client", "server"]
    frontend_api = edges[(FRONTEND, API_SVC, 80)]
    assert (frontend_api["bytesSent"], frontend_api["bytesReceived"]) == (8 * 120, 8 * 100)
    assert edges[(FRONTEND, STORE_POD, 5433)]["failures"]["refused"] == 2
    assert edges[(FRONTEND, FLAKY_SVC, 80)]["failures"]["reset"] == 2
    for key in EXPECTED:
        assert edges[key]["failures"]["refused"] == 0 or key[2] == 5433, edges[key]


def test_udp_flows_are_edges_with_their_peers_on_the_map(matrix: Matrix) -> None:
    """The frontend's datagrams to the names pod: one udp edge seen from both sides,
    datagrams and bytes each way as the generator sent and received them; and its
    lookups at CoreDNS (not selected by the probe) an edge to the kube-dns Service, seen
    from the frontend's side only."""
    sent, received = matrix.udp["v4"]
    n = len(UDP_SIZES)
    assert (sent, received) == (sum(UDP_SIZES), sum(s // 2 for s in UDP_SIZES))
    figures = ("datagramsSent", "datagramsReceived", "bytesSent", "bytesReceived")

    def names_edge() -> tuple[Any, ...] | None:
        edge = _drawn(matrix, "udp").get((FRONTEND, NAMES_POD, 5353))
        return tuple(edge[f] for f in figures) if edge else None

    try:
        wait_until(lambda: names_edge() == (n, n, sent, received), 60, "the udp edge's counts")
    except AssertionError:
        assert names_edge() == (n, n, sent, received), matrix.release.diagnose()
    udp = _drawn(matrix, "udp")
    assert udp[(FRONTEND, NAMES_POD, 5353)]["observedBy"] == ["client", "server"]
    assert udp[(FRONTEND, NAMES_POD, 5353)]["connections"] == 0
    dns = [e for (source, target, port), e in udp.items()
           if source == FRONTEND and target == "service:kube-system/kube-dns" and port == 53]
    assert dns and dns[0]["datagramsSent"] >= 1 and dns[0]["datagramsReceived"] >= 1, udp
    assert dns[0]["observedBy"] == ["client"]  # CoreDNS is no pod the probe selects
    # Its lookups are requests too (kinds dns and udp): every name the frontend resolved
    # was answered (NOERROR; search-path tries may add NXDOMAINs), timed by the client.
    (lookups,) = dns[0]["requests"]
    assert lookups["protocol"] == "dns" and lookups["byStatus"].get("NOERROR", 0) >= 1, lookups
    assert set(lookups["byStatus"]) <= {"NOERROR", "NXDOMAIN"}, lookups
    assert lookups["countedBy"] == "client" and lookups.get("latencyByServer") is None
    assert lookups["latencyByClient"]["samples"] == lookups["requests"]
    def exported() -> float | None:
        return collector_edges(matrix.collector, DATAGRAMS, CLUSTER, (APP,),
                               **{"network.io.direction": "transmit"}).get(
            (f"{APP}/frontend", f"{DATA}/names", 5353))

    assert wait_until(lambda: exported() == n, 60, "the datagrams at the Collector")


def test_http_requests_through_a_service_are_counted_once_with_both_sides_latency(
        matrix: Matrix) -> None:
    """The frontend's requests to the catalog Service: on its edge exactly the statuses
    the client got, counted by the client; the catalog pod's own view joins the same
    edge (its time to answer) and the Collector has the client's histogram."""
    truth = {str(s): n for s, n in Counter(r["status"] for r in matrix.http).items()}
    assert truth == {"200": 8, "404": 2, "500": 1}

    def statuses() -> dict[str, int] | None:
        edge = _drawn(matrix).get((FRONTEND, CATALOG_SVC, 80))
        return edge["requests"][0]["byStatus"] if edge and edge["requests"] else None

    try:
        wait_until(lambda: statuses() == truth, 60, "the catalog edge's requests")
    except AssertionError:
        assert statuses() == truth, matrix.release.diagnose()
    (http,) = _drawn(matrix)[(FRONTEND, CATALOG_SVC, 80)]["requests"]
    assert (http["countedBy"], http["requests"], http["errors"]) == ("client", 11, 3)
    assert http["latencyByClient"]["samples"] == 11
    assert http["latencyByServer"] and http["latencyByServer"]["samples"] == 11

    def exported() -> int:
        return sum(int(p.extra["count"]) for p in matrix.collector.find(
            "http.client.request.duration", **{"k8s.cluster.name": CLUSTER,
                                               "k8s.src.name": "frontend"}))

    assert wait_until(lambda: exported() == 11, 60, "the requests at the Collector")


def test_service_edges_break_down_to_the_backends_kube_proxy_chose(matrix: Matrix) -> None:
    edges = _drawn(matrix)
    to_api = [e for (_, target, _), e in edges.items() if target == API_SVC]
    drawn: dict[str, int] = {}
    for edge in to_api:
        assert {b["id"] for b in edge["backends"]} <= set(BACKENDS_OF_API), edge
        # Every attempt matched to the DNAT flow conntrack made for it: the parts sum to
        # the edge (no refused or timed-out ones here, so attempts are connections).
        assert (edge["backendsFrom"], edge["backendsUnknown"]) == ("conntrack", 0), edge
        assert sum(b["attempts"] for b in edge["backends"]) == edge["attempts"] == \
            edge["connections"], edge
        for b in edge["backends"]:
            drawn[BACKENDS_OF_API[b["id"]]] = drawn.get(BACKENDS_OF_API[b["id"]], 0) + b[
                "attempts"]
    # Per backend workload (both api pods, the replaced one too, are one), what its
    # servers accepted.
    assert drawn == {k: v for k, v in matrix.split.items() if v}, (drawn, matrix.split)
    # No edge names a Service's pods directly for calls that went through the Service.
    assert not [k for k in edges if k[1] in BACKENDS_OF_API], sorted(edges)


def test_the_collector_received_the_same_matrix(matrix: Matrix) -> None:
    def name(node_id: str) -> str:
        return node_id.split(":", 1)[1]

    want = {(name(s), name(t), p): float(n) for (s, t, p), n in EXPECTED.items()}

    def exported() -> dict[tuple[str, str, int], float]:
        got = collector_edges(matrix.collector, CONNS, CLUSTER, (APP, DATA))
        got.pop((name(WARMUP), name(STORE_POD), 5432), None)
        return got

    try:
        wait_until(lambda: exported() == want, 60, "the Collector holds the matrix")
    except AssertionError:
        assert exported() == want
    assert collector_edges(matrix.collector, FAILURES, CLUSTER, (APP,),
                           **{"failure.kind": "refused"}) == {
        (name(FRONTEND), name(STORE_POD), 5433): 2.0}
    sent = collector_edges(matrix.collector, BYTES, CLUSTER, (APP,),
                           **{"network.io.direction": "transmit"})
    assert sent[(name(FRONTEND), name(STORE_POD), 5432)] == 3 * 200
    backends = collector_edges(matrix.collector, BACKENDS, CLUSTER, (APP,))
    per_backend: dict[str, float] = {}
    for (_, dst, _), n in backends.items():
        service, backend = dst.split(">")
        if service == name(API_SVC):
            per_backend[backend] = per_backend.get(backend, 0.0) + n
    assert per_backend == {k: float(v) for k, v in matrix.split.items() if v}, backends


def test_the_node_observes_only_what_the_probe_selects(matrix: Matrix) -> None:
    """The probe selects the matrix's two namespaces: CoreDNS, the chart's own pods and
    the node's processes (kubelet, containerd) are not accounted, only seen as peers."""
    report = json.loads(matrix.node.kubectl("get", "nodereport", matrix.node.name, "-o",
                                            "json").stdout)
    (entry,) = [e for e in report["status"]["probes"] if e["probe"]["name"] == "matrix"]
    # CoreDNS's calls to the API server, the agent's and the map's: skipped in the kernel.
    assert entry["drops"]["unselected"] > 0, entry["drops"]
    sources = {e["source"] for e in matrix.release.api_map()["edges"]}
    unselected = {s for s in sources if not s.startswith(("workload:matrix/",
                                                          "workload:matrix-data/"))}
    # What else may be a source: only peers that a selected pod's server side saw.
    assert all(s.startswith(("node:", "external:")) for s in unselected), unselected
    for edge in matrix.release.api_map()["edges"]:
        if edge["source"] in unselected:
            assert edge["observedBy"] == ["server"], edge
