"""Bytes against the kernel's own per-socket counters (`ss -ti`), exactly: long-lived
connections mid-interval, sendfile traffic, and connections that were open before the
agent started (the sock_ops core adopts them at their first segment out).

Each connection is driven step by step through a peer process in each pod (PEER below):
the test says what to send when, so it knows every byte, and reads `ss` while the
connection is open.
"""

from __future__ import annotations

import re
import select
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.recorder import Recorder as AgentRecorder
from harness.traffic_control import PY, dial, serve, stop

KINDS = frozenset({"connections", "bytes", "failures", "retransmits", "rtt"})

# A TCP peer run by commands on stdin, one per line: "send N" writes N bytes,
# "sendfile N" sends N bytes of a file with os.sendfile, "got N" waits until N bytes
# in all have arrived, "close" closes. It answers each command with "ok".
PEER = r"""
import os, socket, sys, tempfile, threading
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "serve":
    lsock = socket.create_server((host, port)); print("ready", flush=True)
    sock, _ = lsock.accept()  # the listener stays, as a server's does
else:
    sock = socket.create_connection((host, port))
print("connected", flush=True)
received, arrived = 0, threading.Condition()
def read():  # always reading, so no send waits on a full receive buffer
    global received
    while chunk := sock.recv(1 << 16):
        with arrived:
            received += len(chunk); arrived.notify_all()
threading.Thread(target=read, daemon=True).start()
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "send":
        sock.sendall(b"s" * int(arg))
    elif cmd == "sendfile":
        with tempfile.TemporaryFile() as f:
            f.write(b"f" * int(arg)); f.flush()
            offset = 0
            while offset < int(arg):
                offset += os.sendfile(sock.fileno(), f.fileno(), offset, int(arg) - offset)
    elif cmd == "got":
        with arrived:
            arrived.wait_for(lambda: received >= int(arg), timeout=20)
    elif cmd == "close":
        sock.close()
    print("ok", received, flush=True)
"""


class Peer:
    def __init__(self, pod: Any, *args: str) -> None:
        self.proc: subprocess.Popen[str] = pod.popen(
            [PY, "-c", PEER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def expect(self, word: str, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"the peer did not answer {word!r} within {timeout:g}s"
        line = self.proc.stdout.readline().strip()
        assert line.startswith(word), f"peer said {line!r}, not {word!r}"
        return line

    def do(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self.expect("ok")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def connected(client_pod: Any, server_pod: Any, port: int) -> tuple[Peer, Peer]:
    server = Peer(server_pod, "serve", "0.0.0.0", str(port))
    server.expect("ready")
    client = Peer(client_pod, "dial", server_pod.ip, str(port))
    client.expect("connected")
    server.expect("connected")
    return client, server


def kernel(pod: Any, port: int) -> dict[str, int]:
    """bytes_acked and bytes_received of the one connection on `port` in `pod`."""
    out = pod.run(["ss", "-tinH", "state", "established",
                   f"( sport = :{port} or dport = :{port} )"]).stdout
    assert len(re.findall(r"\bcwnd:", out)) == 1, f"not one connection on {port}: {out!r}"
    found = dict(re.findall(r"\b(bytes_acked|bytes_received):(\d+)", out))
    return {k: int(found.get(k, 0)) for k in ("bytes_acked", "bytes_received")}  # 0: left out


class Recorder(AgentRecorder):
    def __init__(self, core: str) -> None:
        super().__init__(KINDS, core)

    def sums(self, pod: Any, role: str, port: int) -> dict[str, int]:
        self.agent.tick()
        mine = [r for r in self.records if r.cgroup_id == pod.cgroup_id and r.role == role
                and port in (r.local_port, r.remote_port)]
        return {f: sum(getattr(r, f) for r in mine)
                for f in ("opened", "closed", "bytes_sent", "bytes_received")}


@pytest.fixture(params=["sock_ops", "tracepoint"])
def recorder(bpf_ready: None, request: pytest.FixtureRequest) -> Iterator[Recorder]:
    rec = Recorder(request.param)
    yield rec
    rec.agent.close()


@pytest.fixture
def pods(pod_factory: Any) -> tuple[Any, Any]:
    return (pod_factory.create("counted-client", "counters"),
            pod_factory.create("counted-server", "counters"))


def test_long_lived_bytes_equal_the_kernel_counters_mid_connection(
        recorder: Recorder, pods: tuple[Any, Any]) -> None:
    a, b = pods
    client, server = connected(a, b, 8090)
    try:
        sent = 0
        for step in (70_001, 1, 1_234_567):  # three intervals, each mid-connection
            sent += step
            client.do(f"send {step}")
            server.do(f"send {2 * step}")
            client.do(f"got {2 * sent}")
            server.do(f"got {sent}")
            time.sleep(0.2)  # the last ACKs are out: both counters have settled
            k_client, k_server = kernel(a, 8090), kernel(b, 8090)
            cli = recorder.sums(a, "client", 8090)
            srv = recorder.sums(b, "server", 8090)
            # The kernel counts the client's SYN in its bytes_acked (not the server's).
            assert (cli["bytes_sent"], cli["bytes_received"]) == (
                k_client["bytes_acked"] - 1, k_client["bytes_received"])
            assert (srv["bytes_sent"], srv["bytes_received"]) == (
                k_server["bytes_acked"], k_server["bytes_received"])
            assert (cli["bytes_sent"], srv["bytes_sent"]) == (sent, 2 * sent)  # and ours
            assert cli["opened"] == srv["opened"] == 1 and cli["closed"] == 0
    finally:
        client.stop()
        server.stop()


def test_sendfile_traffic_is_counted(recorder: Recorder, pods: tuple[Any, Any]) -> None:
    a, b = pods
    client, server = connected(a, b, 8091)
    try:
        server.do("sendfile 2000000")
        client.do("got 2000000")
        time.sleep(0.2)
        k_server = kernel(b, 8091)
        srv = recorder.sums(b, "server", 8091)
        cli = recorder.sums(a, "client", 8091)
        assert k_server["bytes_acked"] == 2_000_000
        assert srv["bytes_sent"] == cli["bytes_received"] == 2_000_000
    finally:
        client.stop()
        server.stop()


def test_connections_open_before_the_agent_count_from_its_start(
        bpf_ready: None, pods: tuple[Any, Any]) -> None:
    """The sock_ops core adopts an established connection at its first segment out:
    bytes from the agent's start on, attributed to the socket's cgroup, with its role
    from whether a listener holds its local port; its opening and closing predate or
    escape the agent and are not counted."""
    a, b = pods
    client, server = connected(a, b, 8092)
    try:
        client.do("send 5000")
        server.do("got 5000")
        server.do("send 9000")
        client.do("got 9000")
        rec = Recorder("sock_ops")
        try:
            client.do("send 300")
            server.do("got 5300")
            server.do("send 700")
            client.do("got 9700")
            time.sleep(0.2)
            cli = rec.sums(a, "client", 8092)
            srv = rec.sums(b, "server", 8092)
            assert cli == {"opened": 0, "closed": 0, "bytes_sent": 300, "bytes_received": 700}
            assert srv == {"opened": 0, "closed": 0, "bytes_sent": 700, "bytes_received": 300}
            assert rec.agent.stats.kernel_counters["preexisting_sockets"] >= 2
        finally:
            rec.agent.close()
    finally:
        client.stop()
        server.stop()


def test_a_listener_from_before_the_agent_has_its_new_connections_counted(
        bpf_ready: None, pods: tuple[Any, Any]) -> None:
    """Servers usually started before the agent: their listener carries no owner's stamp,
    so the connections it accepts are owned by the socket's cgroup, named at their first
    segment out, and counted from their start (process unknown)."""
    a, b = pods
    server = serve(b, 8093, 700)
    try:
        rec = Recorder("sock_ops")
        try:
            truth = dial(a, b.ip, 8093, 300, "--count", "2")
            time.sleep(0.2)
            srv = rec.sums(b, "server", 8093)
            mine = [r for r in rec.records if r.local_port == 8093]
        finally:
            rec.agent.close()
    finally:
        stop(server)
    assert truth["completed"] == 2
    assert srv == {"opened": 2, "closed": 2, "bytes_sent": truth["received"],
                   "bytes_received": truth["sent"]}
    assert mine and all(r.pid is None and r.cgroup_id == b.cgroup_id for r in mine)
