"""Merging client- and server-side records into edges, resolving peers by time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_map.buckets import EdgeKey, Recent
from traceprobe_map.merge import finish, fold, merge
from traceprobe_map.peers import OVERFLOW, Peer, Resolver

WEB = Peer("workload", "web", "shop", "Deployment")
DB = Peer("workload", "db", "shop", "StatefulSet")
ETL = Peer("workload", "etl", "batch", "Job")


def rec(role: Role, at: float, **kw: Any) -> ConnectionRecord:
    t = datetime.fromtimestamp(at, UTC)
    return ConnectionRecord(node=kw.pop("node", "n1"), role=role,
                            transport=kw.pop("transport", "tcp"), family="ipv4",
                            interval_start=t, interval_end=t, **kw)


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
    edges = merge([client, server], resolver()).edges
    assert list(edges) == [EdgeKey(WEB, DB, 5432, "tcp")]
    stats = edges[EdgeKey(WEB, DB, 5432, "tcp")]
    assert (stats.connections, stats.bytes_sent, stats.bytes_received) == (3, 300, 900)
    assert stats.observed_by == {"client", "server"}


def test_server_side_alone_counts_and_flips_bytes() -> None:
    outside = rec(Role.SERVER, 10, local_port=443, remote_ip="203.0.113.7",
                  k8s_namespace="shop", k8s_workload_kind="StatefulSet", k8s_workload="db",
                  opened=2, bytes_sent=5000, bytes_received=100)
    (key, stats), = merge([outside], resolver()).edges.items()
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
                   mk(50, "198.51.100.2", 443), mk(50, "198.51.100.3", 443)], r).edges
    dsts = {(k.dst.kind, k.dst.label): v.connections for k, v in edges.items()}
    assert dsts[("workload", "shop/db")] == 1  # the pod that held the IP before reuse
    assert dsts[("workload", "batch/etl")] == 1  # the new owner: no inherited edges
    assert dsts[("service", "shop/db")] == 1  # a ClusterIP names the Service
    assert dsts[("node", "n2")] == 1
    assert dsts[("external", OVERFLOW)] == 1 and r.overflowed == 1  # third IP, cap 2


def test_udp_and_host_processes() -> None:
    r = resolver()
    edges = merge([rec(Role.UDP, 1, opened=5),
                   rec(Role.CLIENT, 1, remote_ip="10.0.0.2", remote_port=5432, opened=1)], r).edges
    (key,) = edges
    assert key.src == Peer("node", "n1") and key.dst == DB


def test_udp_with_peers_is_an_edge_of_its_own_with_datagrams_each_way() -> None:
    """A resolver's UDP client and the DNS server's side of it: one udp edge, counted
    from the client's side; the server's side alone flips its directions."""
    dns = dict(k8s_namespace="shop", k8s_workload_kind="StatefulSet", k8s_workload="db")
    web = dict(k8s_namespace="shop", k8s_workload_kind="Deployment", k8s_workload="web")
    client = rec(Role.CLIENT, 10, transport="udp", local_ip="10.0.0.1", remote_ip="10.0.0.2",
                 remote_port=53, datagrams_sent=4, datagrams_received=3, bytes_sent=160,
                 bytes_received=390, **web)
    server = rec(Role.SERVER, 10, node="n2", transport="udp", local_ip="10.0.0.2",
                 local_port=53, remote_ip="10.0.0.1", datagrams_sent=3,
                 datagrams_received=4, bytes_sent=390, bytes_received=160, **dns)
    tcp = rec(Role.CLIENT, 10, local_ip="10.0.0.1", remote_ip="10.0.0.2", remote_port=53,
              opened=1, **web)
    edges = merge([client, server, tcp], resolver()).edges
    udp = edges[EdgeKey(WEB, DB, 53, "udp")]
    assert (udp.datagrams_sent, udp.datagrams_received, udp.bytes_sent,
            udp.bytes_received, udp.connections) == (4, 3, 160, 390, 0)
    assert udp.observed_by == {"client", "server"}
    assert edges[EdgeKey(WEB, DB, 53, "tcp")].datagrams_sent == 0
    (alone,) = merge([server], resolver()).edges.values()
    assert (alone.datagrams_sent, alone.datagrams_received) == (4, 3)  # client's view


PAY = Peer("service", "payments", "pay")
PAY_V1 = Peer("workload", "payments-v1", "pay", "Deployment")
PAY_V2 = Peer("workload", "payments-v2", "pay", "Deployment")


def _nat_world() -> Resolver:
    r = resolver()
    r.services.claim("10.96.0.20", PAY, since=0)
    r.pods.claim("10.0.1.1", PAY_V1, since=0)
    r.pods.claim("10.0.1.2", PAY_V2, since=0)
    r.endpoints[PAY] = frozenset({"10.0.1.1", "10.0.1.2"})
    return r


def _server(ip: str, workload: str, n: int) -> ConnectionRecord:
    return rec(Role.SERVER, 10, node="n2", local_ip=ip, local_port=8080, remote_ip="10.0.0.1",
               k8s_namespace="pay", k8s_workload_kind="Deployment", k8s_workload=workload,
               opened=n, bytes_sent=10 * n, bytes_received=n)


def test_service_edge_keeps_conntrack_backends_and_absorbs_server_sides() -> None:
    client = rec(Role.CLIENT, 10, remote_ip="10.96.0.20", remote_port=80, k8s_namespace="shop",
                 k8s_workload_kind="Deployment", k8s_workload="web", opened=5, bytes_sent=5,
                 backends={"10.0.1.1:8080": 3, "10.0.1.2:8080": 2})
    result = merge([client, _server("10.0.1.1", "payments-v1", 3),
                    _server("10.0.1.2", "payments-v2", 2)], _nat_world())
    (key, stats), = result.edges.items()  # one edge: no double counting via backends
    assert key == EdgeKey(WEB, PAY, 80, "tcp") and stats.connections == 5
    assert stats.backends == {PAY_V1: 3, PAY_V2: 2}
    assert stats.observed_by == {"client", "server"}


def test_service_backends_from_endpoint_slices_when_conntrack_is_silent() -> None:
    client = rec(Role.CLIENT, 10, remote_ip="10.96.0.20", remote_port=80, k8s_namespace="shop",
                 k8s_workload_kind="Deployment", k8s_workload="web", opened=4)
    result = merge([client, _server("10.0.1.1", "payments-v1", 1),
                    _server("10.0.1.2", "payments-v2", 3)], _nat_world())
    (stats,) = result.edges.values()
    assert stats.connections == 4 and stats.backends == {PAY_V1: 1, PAY_V2: 3}


def test_server_side_seen_by_client_in_a_neighbouring_window_is_not_recounted() -> None:
    server = rec(Role.SERVER, 10, local_port=5432, remote_ip="10.0.0.1", k8s_namespace="shop",
                 k8s_workload_kind="StatefulSet", k8s_workload="db", opened=3)
    key = EdgeKey(WEB, DB, 5432, "tcp")  # counted elsewhere: who saw it, only
    (carried,) = merge([server], resolver(), Recent(client_keys={key})).edges.values()
    assert (carried.connections, carried.observed_by) == (0, frozenset({"server"}))
    assert merge([server], resolver()).edges[key].connections == 3


def test_owner_roll_up_and_edge_cap() -> None:
    r = resolver()
    r.set_owner(("batch", "Job", "etl-28001"), ("CronJob", "etl"))
    records = [rec(Role.CLIENT, 10, remote_ip=f"198.51.100.{i}", remote_port=443,
                   k8s_namespace="batch", k8s_workload_kind="Job", k8s_workload="etl-28001",
                   opened=i) for i in range(1, 6)]
    r.max_external = 100
    result = merge(records, r, max_edges=3)
    assert all(k.src in (Peer("workload", "etl", "batch", "CronJob"), Peer("overflow",
               "overflow")) for k in result.edges)
    assert len(result.edges) == 3 and result.overflowed_edges == 3
    assert sum(s.connections for s in result.edges.values()) == 15  # nothing lost


def test_host_network_client_seen_as_its_node_by_the_server_is_one_edge() -> None:
    exporter = Peer("workload", "node-exporter", "mon", "DaemonSet")
    client = rec(Role.CLIENT, 10, node="n2", remote_ip="10.0.0.2", remote_port=5432,
                 k8s_namespace="mon", k8s_workload_kind="DaemonSet",
                 k8s_workload="node-exporter", k8s_host_network=True, opened=2)
    server = rec(Role.SERVER, 10, node="n1", local_port=5432, remote_ip="192.168.0.5",
                 k8s_namespace="shop", k8s_workload_kind="StatefulSet", k8s_workload="db",
                 opened=2)
    (key, stats), = merge([client, server], resolver()).edges.items()
    assert key == EdgeKey(exporter, DB, 5432, "tcp") and stats.connections == 2
    assert stats.observed_by == {"client", "server"}


def test_host_network_client_through_a_service_is_one_edge() -> None:
    """The server sees the node's address; conntrack or the slices name the backend."""
    for backends in ({"10.0.1.1:8080": 2}, {}):
        client = rec(Role.CLIENT, 10, node="n2", remote_ip="10.96.0.20", remote_port=80,
                     k8s_namespace="mon", k8s_workload_kind="DaemonSet",
                     k8s_workload="node-exporter", k8s_host_network=True, opened=2,
                     backends=backends)
        server = rec(Role.SERVER, 10, node="n1", local_ip="10.0.1.1", local_port=8080,
                     remote_ip="192.168.0.5", k8s_namespace="pay",
                     k8s_workload_kind="Deployment", k8s_workload="payments-v1", opened=2)
        r = _nat_world()
        r.endpoints[PAY] = frozenset({"10.0.1.1"})
        (key, stats), = merge([client, server], r).edges.items()
        assert key.dst == PAY and stats.connections == 2, backends
        assert stats.backends == {PAY_V1: 2} and stats.observed_by == {"client", "server"}


def test_a_peer_at_one_of_the_servers_own_node_addresses_is_that_node() -> None:
    """The host reached the pod from its CNI gateway (10.234.0.1), an address the Node
    object does not list; the server's agent knew it as its own."""
    for backends in ({"10.0.0.2:5432": 2}, {}):
        client = rec(Role.CLIENT, 10, node="n1", remote_ip="10.96.0.10", remote_port=80,
                     k8s_namespace="mon", k8s_workload_kind="DaemonSet",
                     k8s_workload="node-exporter", k8s_host_network=True, opened=2,
                     backends=backends)
        server = rec(Role.SERVER, 10, node="n1", local_port=5432, remote_ip="10.234.0.1",
                     remote_on_node=True, k8s_namespace="shop",
                     k8s_workload_kind="StatefulSet", k8s_workload="db", opened=2)
        r = resolver()
        r.endpoints[Peer("service", "db", "shop")] = frozenset({"10.0.0.2"})
        edges = merge([client, server], r).edges
        assert [(k.src.label, k.dst.label) for k in edges] == [("mon/node-exporter", "shop/db")]
        (stats,) = edges.values()
        assert stats.connections == 2 and stats.observed_by == {"client", "server"}, backends
    # Without the agent's word the address is an outside peer, as before.
    unmarked = rec(Role.SERVER, 10, node="n1", local_port=5432, remote_ip="10.234.0.1",
                   k8s_namespace="shop", k8s_workload_kind="StatefulSet", k8s_workload="db",
                   opened=1)
    (key,) = merge([unmarked], resolver()).edges
    assert key.src == Peer("external", "10.234.0.1")


def test_a_client_whose_pod_the_map_learnt_late_is_named_when_the_bucket_closes() -> None:
    """The server's record came in before the map's watch told it the client pod's
    address (a Job's pod that ran for a second): named again at finish, at its time."""
    r = resolver()
    server = rec(Role.SERVER, 10, node="n1", local_port=5432, remote_ip="10.0.0.9",
                 k8s_namespace="shop", k8s_workload_kind="StatefulSet", k8s_workload="db",
                 opened=2)
    part = fold([server], r)
    assert next(iter(finish(part, r).edges)).src == Peer("external", "10.0.0.9")
    r.pods.claim_past("10.0.0.9", ETL, since=9, until=11)
    (key,) = finish(part, r).edges
    assert key == EdgeKey(ETL, DB, 5432, "tcp")
    # An address that is no pod's stays outside.
    r2 = resolver()
    (key,) = finish(fold([server.replaced(remote_ip="203.0.113.9")], r2), r2).edges
    assert key.src == Peer("external", "203.0.113.9")


def test_loopback_is_not_an_edge_between_workloads() -> None:
    """A container talking to 127.0.0.1 (CoreDNS's own health checks, a kubelet exec
    probe) stays inside its pod or host: counted as not drawn, no external peer."""
    own = [rec(Role.CLIENT, 10, remote_ip=ip, remote_port=8080, k8s_namespace="kube-system",
               k8s_workload_kind="Deployment", k8s_workload="coredns", opened=1)
           for ip in ("127.0.0.1", "::1", "127.0.0.53")]
    result = merge([*own, rec(Role.SERVER, 10, local_port=8080, remote_ip="127.0.0.1",
                              opened=1)], resolver())
    assert result.edges == {} and result.loopback_records == 4


def test_finish_leaves_the_folded_bucket_as_it_was() -> None:
    from traceprobe_map.merge import finish, fold

    client = rec(Role.CLIENT, 10, remote_ip="10.96.0.20", remote_port=80, k8s_namespace="shop",
                 k8s_workload_kind="Deployment", k8s_workload="web", opened=4)
    r = _nat_world()
    part = fold([client, _server("10.0.1.1", "payments-v1", 1)], r)
    first = finish(part, r)
    again = finish(part, r)  # an open bucket shown twice: same answer, nothing doubled
    assert first.edges == again.edges
    assert next(iter(part.client.values())).backends == {}


def test_remembered_answers_follow_reuse_owners_and_expiry() -> None:
    """The resolver remembers answers per address; every change must still show."""
    r = resolver()
    assert r.remote("10.0.0.2", 50) == DB and r.remote("10.0.0.2", 60) == DB  # remembered
    r.pods.release("10.0.0.2", DB, at=100)
    r.pods.claim("10.0.0.2", ETL, since=200)
    assert r.remote("10.0.0.2", 250) == ETL and r.remote("10.0.0.2", 50) == DB
    assert r.remote("10.0.0.2", 130) == DB  # within the grace period after release
    r.set_owner(("batch", "Job", "etl"), ("CronJob", "nightly"))
    assert r.remote("10.0.0.2", 250) == Peer("workload", "nightly", "batch", "CronJob")
    r.pods.claim("10.0.0.7", WEB, since=0)
    r.pods.release("10.0.0.7", WEB, at=10)
    assert r.remote("10.0.0.7", 8) == WEB  # remembered for [0, 10)
    r.pods.expire(now=1000)  # that tenure ended long ago: forgotten, not remembered
    assert r.remote("10.0.0.7", 8).kind == "external"
    r.services.claim("10.0.0.2", Peer("service", "odd", "shop"), since=300)
    assert r.remote("10.0.0.2", 400) == Peer("service", "odd", "shop")  # Services first


def test_buckets_share_their_name_sets() -> None:
    """Each bucket names an edge's pods and nodes; equal names are one object (memory)."""
    def bucket() -> Any:
        return merge([rec(Role.CLIENT, 10, remote_ip="10.0.0.2", remote_port=5432,
                          k8s_namespace="shop", k8s_workload_kind="Deployment",
                          k8s_workload="web", k8s_pod=f"web-{i}", k8s_pod_uid=f"uid-{i}",
                          opened=1) for i in range(3)], resolver()).edges

    a, b = bucket(), bucket()
    key = EdgeKey(WEB, DB, 5432, "tcp")
    assert a[key].src_pods == {"shop/web-0", "shop/web-1", "shop/web-2"}
    assert a[key].src_pods is b[key].src_pods and a[key].src_nodes is b[key].src_nodes


def test_external_cap_frees_addresses_not_seen_for_a_period() -> None:
    r = Resolver(max_external=2, external_seconds=300)
    r.expire(now=0)
    assert r.remote("198.51.100.1", 1).name == "198.51.100.1"
    assert r.remote("198.51.100.2", 1).name == "198.51.100.2"
    assert r.remote("198.51.100.3", 1).name == OVERFLOW and r.overflowed == 1
    r.expire(now=300)  # a new period: .1 is seen again, .2 is not
    assert r.remote("198.51.100.1", 301).name == "198.51.100.1"
    assert r.remote("198.51.100.3", 302).name == OVERFLOW  # .2 still holds its place
    r.expire(now=600)  # .2 unseen for a whole period: its place is free
    assert r.remote("198.51.100.3", 601).name == "198.51.100.3"
    assert r.remote("198.51.100.2", 602).name == OVERFLOW and r.overflowed == 3
    r.pods.claim("198.51.100.3", WEB, since=700)  # a pod takes the address
    assert r.remote("198.51.100.3", 701) == WEB


def test_external_peer_named_by_its_dns_answer() -> None:
    """The agent saw a DNS answer for the address: the map draws the name, one peer for
    all of its addresses; in-cluster addresses keep their workloads whatever the name."""
    def call(ip: str, name: str | None) -> ConnectionRecord:
        return rec(Role.CLIENT, 10, remote_ip=ip, remote_port=443, remote_dns_name=name,
                   k8s_namespace="shop", k8s_workload_kind="Deployment", k8s_workload="web",
                   opened=1)

    r = resolver()
    r.max_external = 10
    edges = merge([call("198.51.100.1", "api.partner.example"),
                   call("198.51.100.2", "api.partner.example"), call("198.51.100.3", None),
                   call("10.0.0.2", "db.shop.svc.cluster.local")], r).edges
    dsts = {k.dst: v.connections for k, v in edges.items()}
    assert dsts == {Peer("external", "api.partner.example"): 2,
                    Peer("external", "198.51.100.3"): 1, DB: 1}
