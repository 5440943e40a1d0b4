"""The real node's traffic matrix (tests/harness/node_matrix.py) against independent
truth: what the traffic generator completed or saw fail, and for the Service split, the
peers each server logged as it accepted them. The chart runs from `helm install`; the
map's /api/map and what a real Collector received must both show it. UDP and HTTP:
test_traffic_matrix_protocols.py.
"""

from __future__ import annotations

import json

import pytest

from harness.node_matrix import (
    API_SVC,
    APP,
    BACKENDS_OF_API,
    BATCH,
    CACHE_SVC,
    CATALOG_SVC,
    CLUSTER,
    DATA,
    FLAKY_SVC,
    FRONTEND,
    HOSTNET,
    LEDGER_SVC,
    PRICING_SVC,
    STORE_POD,
    WARMUP,
    Matrix,
)
from harness.node_matrix import drawn as _drawn
from harness.truth import BACKENDS, BYTES, CONNS, FAILURES, collector_edges
from harness.waiting import wait_until

pytestmark = pytest.mark.timeout(900)


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
    (FRONTEND, LEDGER_SVC, 5432): 1,  # likewise for every statement
    (FRONTEND, CACHE_SVC, 6379): 1,   # and every command
    (FRONTEND, PRICING_SVC, 50051): 1,  # and every gRPC call, multiplexed
}
REFUSED = {(FRONTEND, STORE_POD, 5433): 2}


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
