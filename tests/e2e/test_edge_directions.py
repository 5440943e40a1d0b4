"""Each direction's retransmits on a map edge against the kernel's own counters.

Two netns pods on two simulated nodes, a cluster-mode agent on each, OTLP to the
real service map; packets are lost in one direction at a time (an iptables drop
on the receiving pod's INPUT: this kernel has no netem), and the map's edge is
compared with `ss -ti` read in each pod's namespace while the connection is open:
the client-sent figure with the client's retransmit counter, the server-sent one
with the server's.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.install import apply_probe, install
from harness.map_world import MapWorld
from harness.pods import PodFactory
from harness.traffic_control import PY, dial, serve, stop
from harness.waiting import wait_until

CLUSTER = "e2e-edge-directions"
NAMESPACE = "edges"
CLIENT = f"workload:{NAMESPACE}/client"
SERVER = f"workload:{NAMESPACE}/server"
BIG, SMALL = 3_000_000, 1000

# One connection that stays open after its transfer, so `ss` can still read it: the
# client sends REQUEST bytes, the server answers REPLY bytes, then the client waits for
# a line on stdin before closing (traffic.py's server answers only at the client's
# half-close, when its counters are about to go).
PEER = """
import socket, sys
mode, port, request, reply = sys.argv[1], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def read(conn, n):
    got = 0
    while got < n:
        chunk = conn.recv(min(65536, n - got))
        if not chunk:
            raise SystemExit("peer closed early")
        got += len(chunk)

if mode == "serve":
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port)); srv.listen(1); print("ready", flush=True)
    conn, _ = srv.accept()
    read(conn, request); conn.sendall(b"r" * reply)
    while conn.recv(65536):
        pass
    conn.close()
else:
    conn = socket.create_connection((sys.argv[2], port), timeout=30)
    conn.sendall(b"q" * request); read(conn, reply)
    print("transferred", flush=True)
    sys.stdin.readline()
    conn.close()
"""


@pytest.fixture(scope="module")
def world(control_plane: Any, bpf_ready: None,
          tmp_path_factory: Any) -> Iterator[tuple[MapWorld, Any, Any]]:
    """One map, two agents and the two pods for both directions (each its own port)."""
    install(control_plane)
    n1 = PodFactory(control_plane.api_client(), node="ed-node-1")
    n2 = PodFactory(control_plane.api_client(), node="ed-node-2")
    w = MapWorld(control_plane, tmp_path_factory.mktemp("edge-directions"))
    try:
        client = n1.create("client-6d9f-a1", NAMESPACE, owner=("Deployment", "client"))
        server = n2.create("server-0", NAMESPACE, owner=("StatefulSet", "server"))
        w.start_map(None, cluster=CLUSTER)
        apply_probe(w.cp, "directions", NAMESPACE, "{interval: 1s}")
        for node in ("ed-node-1", "ed-node-2"):
            w.start_agent(node)
        warm_server = serve(server, 7000, 1)
        try:
            def warm() -> bool:  # both agents attached and reporting to the map
                dial(client, server.ip, 7000, 1)
                return any(e["source"] == CLIENT and e["observedBy"] == ["client", "server"]
                           for e in w.api_map()["edges"])

            wait_until(warm, timeout=90, what="both agents reporting the warm-up edge")
        finally:
            stop(warm_server)
        yield w, client, server
    finally:
        w.stop()
        n2.cleanup()
        n1.cleanup()


def _ss_text(pod: Any, port: int) -> str:
    return str(pod.run(["ss", "-tinH", f"( sport = :{port} or dport = :{port} )"]).stdout)


def _ss(pod: Any, port: int) -> dict[str, int]:
    """The kernel's own counters for the connection to/from `port` (ss -ti); `unacked`
    is 0 once everything sent is acknowledged (ss leaves the field out then)."""
    out = _ss_text(pod, port)
    fields = {k: int(v) for k, v in re.findall(
        r"\b(bytes_acked|bytes_received|unacked):(\d+)", out)}
    fields.setdefault("unacked", 0)
    retrans = re.search(r"retrans:\d+/(\d+)", out)
    fields["retrans_total"] = int(retrans.group(1)) if retrans else 0
    return fields


def _lossy_transfer(client: Any, server: Any, port: int, request: int, reply: int,
                    lossy: Any, match: list[str]) -> tuple[int, int]:
    """One connection with every 20th packet matching `match` dropped in `lossy`'s
    INPUT; returns the kernel's (client, server) retransmit counters, read once every
    byte is acknowledged and before the connection closes (no loss by then)."""
    # The 11th of every 20: never the handshake, and deterministic (with GRO a 3 MB
    # transfer may be only ~100 packets, and a random 5 % could drop none).
    rule = ["INPUT", "-p", "tcp", *match, "-m", "statistic", "--mode", "nth",
            "--every", "20", "--packet", "10", "-j", "DROP"]
    lossy.run(["iptables", "-A", *rule])
    args = [str(port), str(request), str(reply)]
    srv = server.popen([PY, "-c", PEER, "serve", "-", *args], stdout=subprocess.PIPE,
                       text=True)
    dialer = None
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        dialer = client.popen([PY, "-c", PEER, "dial", server.ip, *args],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert dialer.stdout is not None and dialer.stdin is not None
        assert dialer.stdout.readline().strip() == "transferred"
        def acknowledged() -> bool:  # nothing in flight: no retransmit can follow
            ours, theirs = _ss(client, port), _ss(server, port)
            return (ours.get("bytes_received"), theirs.get("bytes_received"),
                    ours["unacked"], theirs["unacked"]) == (reply, request, 0, 0)

        wait_until(acknowledged, timeout=30, what="every byte acknowledged both ways",
                   diagnose=lambda: f"client: {_ss_text(client, port)}\n"
                                    f"server: {_ss_text(server, port)}")
        kernel = (_ss(client, port)["retrans_total"], _ss(server, port)["retrans_total"])
        lossy.run(["iptables", "-D", *rule])
        dialer.stdin.write("close\n")
        dialer.stdin.flush()
        assert dialer.wait(30) == 0 and srv.wait(30) == 0
    finally:
        stop(srv, *([dialer] if dialer else []))
    return kernel


def _settled_edge(w: MapWorld, port: int, request: int, reply: int) -> dict[str, Any]:
    """The edge once the whole connection is in and its figures stay put for 3 s
    (two agent intervals and a map bucket)."""
    edge_id = f"{CLIENT}->{SERVER}:{port}/tcp"
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        edge = next((e for e in w.api_map()["edges"] if e["id"] == edge_id), None)
        if edge is None or (edge["bytesSent"], edge["bytesReceived"], edge["observedBy"]) != (
                request, reply, ["client", "server"]):
            return None
        figures = (edge.get("retransmitsClientToServer"), edge.get("retransmitsServerToClient"),
                   edge["rttByClient"]["samples"], edge["rttByServer"]["samples"])
        now = time.monotonic()
        if last.get("figures") != figures:
            last.update(figures=figures, since=now)
            return None
        return edge if now - last["since"] >= 3 else None

    return dict(wait_until(check, timeout=60, what=f"edge {edge_id} complete and settled",
                           interval=0.5))


@pytest.mark.parametrize("lost", ["client-to-server", "server-to-client"])
def test_each_direction_of_retransmits_tracks_its_senders_kernel_counter(
        world: tuple[MapWorld, Any, Any], lost: str) -> None:
    w, client, server = world
    if lost == "client-to-server":  # the client's data is lost on its way in: it resends
        port, request, reply = 8091, BIG, SMALL
        lossy, match = server, ["--dport", str(port)]
    else:  # the server's answer is lost on the client's side: the server resends
        port, request, reply = 8092, SMALL, BIG
        lossy, match = client, ["--sport", str(port)]
    kernel_client, kernel_server = _lossy_transfer(client, server, port, request, reply,
                                                   lossy, match)
    edge = _settled_edge(w, port, request, reply)
    sent_by_client = edge["retransmitsClientToServer"]
    sent_by_server = edge["retransmitsServerToClient"]
    print(f"\n{lost}: client sent {sent_by_client} (kernel {kernel_client}),"
          f" server sent {sent_by_server} (kernel {kernel_server})")
    assert (kernel_client if lost == "client-to-server" else kernel_server) > 0, \
        "the test induced no loss"
    # As in the agent's long-lived test: the tracepoint counts retransmitted skbs, the
    # kernel counts segments (with segmentation offload one resent skb here carries up
    # to ~45 segments: 3 skbs against 111 segments in one run), so each figure is
    # bounded by its sender's counter and non-zero exactly when that counter is; the
    # direction without loss must stay at its kernel's 0, so the two cannot be mixed up.
    for ours, kernel in ((sent_by_client, kernel_client), (sent_by_server, kernel_server)):
        assert 0 <= ours <= kernel and (ours > 0) == (kernel > 0), (ours, kernel)
    assert edge["retransmits"] == sent_by_client + sent_by_server
    # RTT as each side measured it: both sides sampled (at least at close).
    assert edge["rttByClient"]["samples"] >= 1 and edge["rttByServer"]["samples"] >= 1
    assert edge["rtt"]["samples"] == (edge["rttByClient"]["samples"]
                                      + edge["rttByServer"]["samples"])
