"""A trivial tracepoint program proving BPF works here: it counts TCP state changes.

Loaded through the agent's bcc_runtime (the one module allowed to import bcc),
so the test world and the product share header discovery and preflight checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from traceprobe_agent.bcc_runtime import BpfUnavailable, loaded_program, preflight

COUNT_STATE_CHANGES = r"""
BPF_ARRAY(transitions, u64, 1);

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != 6)  // IPPROTO_TCP; uapi headers not needed for one constant
        return 0;
    int zero = 0;
    u64 *count = transitions.lookup(&zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    return 0;
}
"""


def bpf_unavailable_reason() -> str | None:
    try:
        preflight()
    except BpfUnavailable as exc:
        return str(exc)
    return None


@contextmanager
def state_change_counter() -> Iterator[Any]:
    """Yields a function returning how many TCP state changes the kernel reported."""
    with loaded_program(COUNT_STATE_CHANGES) as prog:
        table = prog["transitions"]

        def count() -> int:
            return int(table[table.Key(0)].value)

        yield count
