"""Merging client- and server-side records into edges, resolving peers by time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_map.merge import EdgeKey, merge
from traceprobe_map.peers import OVERFLOW, Peer, Resolver

WEB = Peer("workload", "web", "shop", "Deployment")
DB = Peer("workload", "db", "shop", "StatefulSet")
ETL = Peer("workload", "etl", "batch", "Job")


def rec(role: Role, at: float, **kw: Any) -> ConnectionRecord:
    t = datetime.fromtimestamp(at, UTC)
    return ConnectionRecord(node=kw.pop("node", "n1"), role=role, transport="tcp",
                            family="ipv4", interval_start=t, interval_end=t, **kw)


def resolver() -> Resolver:
    r = Resolver(max_external=2)
    r.pods.claim("10.0.0.1", WEB, since=0)
    r.pods.claim("10.0.0.2", DB, since=0)
    r.services.claim("10.96.0.10", Peer("service", "db", "shop"), since=0)
    r.nodes.claim("192.168.0.5", Peer("node", "n2"), since=0)
    return r


def test_both_sides_make_one_edge_counted_once() -> None:
    client = rec(Role.CLIENT, 10, local_ip="10.0.0.1", remote_ip="10.0.0.2", remote_port=5432,
                 k8s_namespace="shop", k8s_workload_kind="Deployment", k8s_workload="web",
                 opened=3, bytes_sent=300, bytes_received=900)
    server = rec(Role.SERVER, 10, node="n2", local_ip="10.0.0.2", local_port=5432,
                 remote_ip="10.0.0.1", k8s_namespace="shop", k8s_workload_kind="StatefulSet",
                 k8s_workload="db", opened=3, bytes_sent=900, bytes_received=300)
    edges = merge([client, server], resolver())
    assert list(edges) == [EdgeKey(WEB, DB, 5432, "tcp")]
    stats = edges[EdgeKey(WEB, DB, 5432, "tcp")]
    assert (stats.connections, stats.bytes_sent, stats.bytes_received) == (3, 300, 900)
    assert stats.observed_by == {"client", "server"}


def test_server_side_alone_counts_and_flips_bytes() -> None:
    outside = rec(Role.SERVER, 10, local_port=443, remote_ip="203.0.113.7",
                  k8s_namespace="shop", k8s_workload_kind="StatefulSet", k8s_workload="db",
                  opened=2, bytes_sent=5000, bytes_received=100)
    (key, stats), = merge([outside], resolver()).items()
    assert key.src == Peer("external", "203.0.113.7") and key.dst == DB
    assert (stats.bytes_sent, stats.bytes_received) == (100, 5000)  # client's view


def test_reused_ip_and_services_nodes_and_overflow() -> None:
    r = resolver()
    r.pods.release("10.0.0.2", DB, at=100)
    r.pods.claim("10.0.0.2", ETL, since=200)

    def mk(at: float, ip: str, port: int) -> ConnectionRecord:
        return rec(Role.CLIENT, at, remote_ip=ip, remote_port=port, k8s_namespace="shop",
                   k8s_workload="web", k8s_workload_kind="Deployment", opened=1)

    edges = merge([mk(50, "10.0.0.2", 1), mk(250, "10.0.0.2", 1), mk(50, "10.96.0.10", 80),
                   mk(50, "192.168.0.5", 10250), mk(50, "198.51.100.1", 443),
                   mk(50, "198.51.100.2", 443), mk(50, "198.51.100.3", 443)], r)
    dsts = {(k.dst.kind, k.dst.label): v.connections for k, v in edges.items()}
    assert dsts[("workload", "shop/db")] == 1  # the pod that held the IP before reuse
    assert dsts[("workload", "batch/etl")] == 1  # the new owner: no inherited edges
    assert dsts[("service", "shop/db")] == 1  # a ClusterIP names the Service
    assert dsts[("node", "n2")] == 1
    assert dsts[("external", OVERFLOW)] == 1 and r.overflowed == 1  # third IP, cap 2


def test_udp_and_host_processes() -> None:
    r = resolver()
    edges = merge([rec(Role.UDP, 1, opened=5),
                   rec(Role.CLIENT, 1, remote_ip="10.0.0.2", remote_port=5432, opened=1)], r)
    (key,) = edges
    assert key.src == Peer("node", "n1") and key.dst == DB
