"""A trivial tracepoint program proving BPF works here: it counts TCP state changes.

Loaded with bcc directly (the product's loaders are shaped for its own programs)
after the agent's preflight, so the test world and the product share header
discovery and the checks that name what is missing.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from traceprobe_agent.bcc_runtime import preflight

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


@contextmanager
def loaded_program(text: str) -> Iterator[Any]:
    """A BCC program compiled and loaded (TRACEPOINT_PROBE blocks attach on load),
    detached and its maps freed when the block exits, also on error."""
    preflight()  # BpfUnavailable, with the reason, before bcc is touched
    import bcc

    prog = bcc.BPF(text=text.encode())
    try:
        yield prog
    finally:
        prog.cleanup()


@contextmanager
def state_change_counter() -> Iterator[Any]:
    """Yields a function returning how many TCP state changes the kernel reported."""
    with loaded_program(COUNT_STATE_CHANGES) as prog:
        table = prog["transitions"]

        def count() -> int:
            return int(table[table.Key(0)].value)

        yield count


def held_ids(pid: int, kind: str = "prog") -> set[int]:
    """IDs of the BPF programs (kind="prog") or maps ("map") a process holds open,
    read from its fdinfo: precise even while other BPF users come and go."""
    ids: set[int] = set()
    for info in Path(f"/proc/{pid}/fdinfo").glob("*"):
        with contextlib.suppress(OSError):
            ids.update(int(m) for m in re.findall(rf"^{kind}_id:\s*(\d+)", info.read_text(),
                                                   re.M))
    return ids


def live_ids(kind: str = "prog") -> set[int]:
    """IDs of every BPF program or map in the kernel right now (bpftool)."""
    out = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True,
                         check=True).stdout
    return {int(item["id"]) for item in json.loads(out)}
