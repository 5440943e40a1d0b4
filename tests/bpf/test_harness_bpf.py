"""Real BPF: a tracepoint program loads, counts real TCP activity, and unloads cleanly."""

from __future__ import annotations

import json
import socket
import subprocess

from harness.bpf import state_change_counter


def _bpf_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"] for p in json.loads(out)}


def test_tracepoint_program_counts_loopback_connections(bpf_ready: None) -> None:
    before_ids = _bpf_prog_ids()
    with state_change_counter() as count:
        assert _bpf_prog_ids() - before_ids, "program not visible to bpftool while loaded"
        start = count()
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        for _ in range(5):
            conn = socket.create_connection(("127.0.0.1", port))
            peer, _ = server.accept()
            conn.close()
            peer.close()
        server.close()
        # Each connection walks CLOSE→SYN_SENT→ESTABLISHED on the client and
        # more on the server: at least 2 transitions per connection are certain.
        assert count() - start >= 10
    assert not (_bpf_prog_ids() - before_ids), "program still loaded after cleanup"
