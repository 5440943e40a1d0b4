"""UDP from the agent's records against known datagrams between netns pods (real eBPF):
per process on the tracepoint core, with peers on the sock_ops core, and to a ClusterIP.

Truth comes from the processes that sent and answered them (tests/harness/traffic.py).
"""

from __future__ import annotations

import subprocess
from typing import Any

from harness.recorder import Recorder
from harness.traffic_control import PY, finish, stop, udp_call, udp_echo

UDP_PING = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"u" * 123, (sys.argv[1], 9999))
"""
UDP_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999)); print("ready", flush=True)
for _ in range(int(sys.argv[1])):
    s.recvfrom(2048)
print("done", flush=True)
"""


def test_udp_datagrams_are_counted_per_process(pod_factory: Any, bpf_ready: None) -> None:
    # UDP tracepoints carry no addresses: the tracepoint core reports UDP per local
    # process (datagrams and bytes each way), honestly without a peer.
    rec = Recorder(frozenset({"connections", "udp"}), core="tracepoint")
    try:
        a = pod_factory.create("udp-client", "traffic")
        b = pod_factory.create("udp-server", "traffic")
        sink = b.popen([PY, "-c", UDP_SINK, "10"], stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        a.run([PY, "-c", UDP_PING, b.ip, "10"])
        assert sink.stdout.readline().strip() == "done"
        sink.wait(5)
        rec.flush()
        sent = rec.edge(role="udp", cgroup_id=a.cgroup_id)
        got = rec.edge(role="udp", cgroup_id=b.cgroup_id)
        assert (sent["datagrams_sent"], sent["bytes_sent"]) == (10, 1230)
        assert (got["datagrams_received"], got["bytes_received"]) == (10, 1230)
    finally:
        rec.agent.close()


def test_udp_flows_are_edges_with_their_peers_in_the_sock_ops_core(
        pod_factory: Any, bpf_ready: None) -> None:
    """Datagrams and payload bytes each way, per peer and family, equal what the two
    processes sent and received: unconnected and connected sockets, a datagram larger
    than the veth's MTU (fragmented on the wire, whole at the socket), and a server
    socket created before the agent (owned by its pod's cgroup, process unknown)."""
    a = pod_factory.create("udp-caller", "traffic")
    b = pod_factory.create("udp-echo", "traffic")
    sizes = [1, 100, 1400, 20000, 60000]
    echo = udp_echo(b, 9999, 2 * len(sizes))
    rec = Recorder(frozenset({"connections", "udp"}), core="sock_ops")
    try:
        done = udp_call(a, b.ip, b.ip6, 9999, sizes)
        seen = finish(echo)
        rec.flush()
    finally:
        stop(echo)
        rec.agent.close()
    assert seen == {"in": 2 * len(sizes), "bytes_in": 2 * sum(sizes)}
    n = len(sizes)
    for family, local, remote in (("v4", a.ip, b.ip), ("v6", a.ip6, b.ip6)):
        sent, received = done[family]
        client = rec.edge(role="client", transport="udp", local_ip=local, remote_ip=remote,
                          remote_port=9999)
        assert (client["datagrams_sent"], client["datagrams_received"], client["bytes_sent"],
                client["bytes_received"]) == (n, n, sent, received), family
        server = rec.edge(role="server", transport="udp", local_ip=remote, local_port=9999,
                          remote_ip=local)
        assert (server["datagrams_sent"], server["datagrams_received"], server["bytes_sent"],
                server["bytes_received"]) == (n, n, received, sent), family
        assert client["opened"] == server["opened"] == 0  # no connections on UDP
    assert rec.one(role="client", transport="udp", remote_ip=b.ip).cgroup_id == a.cgroup_id
    echoed = rec.one(role="server", transport="udp", local_ip=b.ip)
    assert echoed.cgroup_id == b.cgroup_id and echoed.pid is None  # from before the agent
    assert not any(r.role.value == "udp" for r in rec.records)  # no peerless records


def test_udp_to_a_cluster_ip_stays_on_the_address_the_application_named(
        pod_factory: Any, service_factory: Any, bpf_ready: None) -> None:
    """A node process (hostNetwork) sends to a ClusterIP, which netfilter's OUTPUT hook
    DNATs to the server pod before the egress program sees the datagram, and gets its
    answers back from the ClusterIP: unconnected (sendto) and connected sockets alike put
    both directions on one client edge to the ClusterIP, none on the pod's address."""
    node = pod_factory.create("node-proc", "traffic", host_network=True)
    b = pod_factory.create("names-0", "traffic", labels={"app": "names"})
    echo = udp_echo(b, 5353)
    svc = service_factory.create("names", "traffic", [b], 53, 5353, protocol="UDP")
    rec = Recorder(frozenset({"connections", "udp"}), core="sock_ops")
    try:
        sent = udp_call(node, svc.cluster_ip, "", 53, [100, 300])["v4"]
        connected = udp_call(node, svc.cluster_ip, "", 53, [50, 7000], "--connect")["v4"]
        rec.flush()
    finally:
        stop(echo)
        rec.agent.close()
    client = rec.edge(role="client", transport="udp", cgroup_id=node.cgroup_id,
                      remote_ip=svc.cluster_ip, remote_port=53)
    assert (client["datagrams_sent"], client["datagrams_received"], client["bytes_sent"],
            client["bytes_received"]) == (4, 4, sent[0] + connected[0], sent[1] + connected[1])
    assert not [r for r in rec.records if r.remote_ip == b.ip and r.role == "client"]
    server = rec.edge(role="server", transport="udp", local_ip=b.ip, local_port=5353)
    assert (server["datagrams_received"], server["bytes_received"]) == (
        4, sent[0] + connected[0])
