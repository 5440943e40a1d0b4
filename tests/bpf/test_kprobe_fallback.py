"""The bytes fallback (bpf/conn_bytes_kprobe.c) on the real kernel.

Kernels before 6.3 lack sock:sock_send_length/sock_recv_length; there the agent
counts TCP bytes through kprobes instead. These machines have no kprobes at all,
so here the fallback's programs go through the kernel's verifier but cannot attach:
what is checked is that, that the failure is named and touches only bytes, and on
a kernel with kprobes (the other branch) that bytes are counted exactly.
"""

from __future__ import annotations

import socket
from dataclasses import replace

from traceprobe_agent.bcc_runtime import ConnTracker
from traceprobe_agent.features import probe_kernel
from traceprobe_agent.program import BYTES_KPROBES, bpf_source, plan_program

NO_IO = frozenset({"sock:sock_send_length", "sock:sock_recv_length"})


def _traffic(n: int, size: int) -> int:
    """n loopback connections, each sending `size` bytes each way; returns the port."""
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])
    for _ in range(n):
        client = socket.create_connection(("127.0.0.1", port))
        peer, _ = server.accept()
        client.sendall(b"x" * size)
        assert len(peer.recv(size, socket.MSG_WAITALL)) == size
        peer.sendall(b"y" * size)
        assert len(client.recv(size, socket.MSG_WAITALL)) == size
        client.close()
        peer.close()
    server.close()
    return port


def test_fallback_passes_the_verifier_and_a_failed_attach_costs_only_bytes(
        bpf_ready: None) -> None:
    kernel = probe_kernel(forced_missing=NO_IO)
    plan = plan_program({"bytes"}, replace(kernel, kprobes=True), 4096)
    assert plan.kprobes == BYTES_KPROBES and "-DWITH_BYTES_KPROBE" in plan.cflags
    tracker = ConnTracker(bpf_source(*plan.sources), list(plan.cflags), plan.kprobes)
    try:
        assert tracker.verified == [program for _, _, program in BYTES_KPROBES]
        port = _traffic(3, 1000)
        mine = [v for k, v in tracker.drain() if k["role"] == 1 and k["port"] == port]
        assert sum(v["opened"] for v in mine) == 3  # connections count either way
        if kernel.kprobes:  # a kernel with kprobes: the fallback counts the bytes
            assert tracker.kprobe_problem is None
            assert sum(v["bytes_sent"] for v in mine) == 3000
            assert sum(v["bytes_received"] for v in mine) == 3000
        else:
            assert tracker.kprobe_problem is not None
            assert tracker.kprobe_problem.startswith("kprobe fallback could not attach")
            assert not any(p.startswith("kprobe") for p in tracker.program_ids())
            assert sum(v["bytes_sent"] for v in mine) == 0
    finally:
        tracker.close()
