"""The real node's traffic matrix, by protocol (tests/harness/node_matrix.py): UDP
flows as edges with their peers and CoreDNS's lookups as DNS requests, HTTP requests,
PostgreSQL statements and Redis commands through Services, each against what the
generator sent and got.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from harness.node_matrix import (
    APP,
    CACHE_SVC,
    CATALOG_SVC,
    CLUSTER,
    DATA,
    FRONTEND,
    LEDGER_SVC,
    NAMES_POD,
    PRICING_SVC,
    UDP_SIZES,
    Matrix,
)
from harness.node_matrix import drawn as _drawn
from harness.truth import DATAGRAMS, collector_edges, histogram_count
from harness.waiting import wait_until

pytestmark = pytest.mark.timeout(900)


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
        return histogram_count(matrix.collector, "http.client.request.duration",
                               **{"k8s.cluster.name": CLUSTER, "k8s.src.name": "frontend"})

    assert wait_until(lambda: exported() == 11, 60, "the requests at the Collector",
                      diagnose=lambda: f"exported: {exported()}")




def _outcomes(results: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    return (dict(Counter(r["outcome"] for r in results)),
            dict(Counter(r["operation"] for r in results)))


@pytest.mark.parametrize(("system", "target", "port", "protocol"), [
    ("pg", LEDGER_SVC, 5432, "postgresql"), ("redis", CACHE_SVC, 6379, "redis")])
def test_database_requests_through_a_service_match_what_the_client_got(
        matrix: Matrix, system: str, target: str, port: int, protocol: str) -> None:
    """The frontend's statements to real PostgreSQL (psycopg2: a Query each) and
    commands to real Redis: on the Service's edge exactly the outcomes and operations
    the client got, counted by the client, the server's own view joined to the edge,
    and the Collector's db.client.operation.duration counts them all."""
    by_outcome, by_operation = _outcomes(matrix.db[system])
    n = len(matrix.db[system])
    if system == "pg":
        assert by_outcome == {"00000": 5, "23505": 1, "42P01": 1}
    else:
        assert by_outcome == {"OK": 7, "ERROR": 1}  # INCR of a hash

    def seen() -> tuple[dict[str, int], dict[str, int]] | None:
        edge = _drawn(matrix).get((FRONTEND, target, port))
        if not edge or not edge.get("requests"):
            return None
        (requests,) = edge["requests"]
        return requests["byStatus"], requests["byMethod"]

    try:
        wait_until(lambda: seen() == (by_outcome, by_operation), 60, f"the {system} edge")
    except AssertionError:
        assert seen() == (by_outcome, by_operation), matrix.release.diagnose()
    (requests,) = _drawn(matrix)[(FRONTEND, target, port)]["requests"]
    assert (requests["protocol"], requests["countedBy"]) == (protocol, "client")
    assert requests["errors"] == n - by_outcome.get("00000", by_outcome.get("OK", 0))
    assert requests["latencyByClient"]["samples"] == n
    assert requests["latencyByServer"] and requests["latencyByServer"]["samples"] == n

    def exported() -> int:
        return histogram_count(matrix.collector, "db.client.operation.duration",
                               **{"k8s.cluster.name": CLUSTER, "db.system.name": protocol})

    assert wait_until(lambda: exported() == n, 60, f"the {system} operations at the Collector",
                      diagnose=lambda: f"exported: {exported()}")


def test_grpc_calls_through_a_service_are_counted_once_with_their_status_codes(
        matrix: Matrix) -> None:
    """The frontend's calls to the pricing Service (grpcio, one channel, Debian's): on
    its edge exactly the status codes the client got, counted by the client, the
    server's view joined, and the Collector's rpc.client.duration counts them all."""
    names = {0: "OK", 5: "NOT_FOUND", 14: "UNAVAILABLE"}
    truth = dict(Counter(names[r["status"]] for r in matrix.grpc))
    assert truth == {"OK": 5, "NOT_FOUND": 2, "UNAVAILABLE": 1}

    def statuses() -> dict[str, int] | None:
        edge = _drawn(matrix).get((FRONTEND, PRICING_SVC, 50051))
        return edge["requests"][0]["byStatus"] if edge and edge.get("requests") else None

    try:
        wait_until(lambda: statuses() == truth, 60, "the pricing edge's calls")
    except AssertionError:
        assert statuses() == truth, matrix.release.diagnose()
    (calls,) = _drawn(matrix)[(FRONTEND, PRICING_SVC, 50051)]["requests"]
    assert (calls["protocol"], calls["countedBy"], calls["errors"]) == ("grpc", "client", 3)
    assert calls["latencyByServer"] and calls["latencyByServer"]["samples"] == 8

    def exported() -> int:
        return histogram_count(matrix.collector, "rpc.client.duration",
                               **{"k8s.cluster.name": CLUSTER, "rpc.system": "grpc"})

    assert wait_until(lambda: exported() == 8, 60, "the calls at the Collector",
                      diagnose=lambda: f"exported: {exported()}")
