"""Real BPF: a tracepoint program loads, counts real TCP activity, and unloads cleanly."""

from __future__ import annotations

import os
import socket

from harness.bpf import held_ids, live_ids, state_change_counter


def test_tracepoint_program_counts_loopback_connections(bpf_ready: None) -> None:
    with state_change_counter() as count:
        mine = held_ids(os.getpid())
        assert mine and mine <= live_ids(), "program not visible to bpftool while loaded"
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
    assert not mine & live_ids(), "program still loaded after cleanup"
