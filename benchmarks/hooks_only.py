"""The floor: empty BPF programs on the hooks the agent attaches.

`python -m benchmarks.hooks_only KIND/NAME ...` (names as the agent's ready message
lists them, e.g. `tracepoint/sock:inet_sock_set_state`, `raw_tracepoint/sock_recv_length`,
`cgroup_skb/dns_ingress`) attaches a program that returns at once to each, prints
`{"ready": true}` and waits for SIGTERM. What the traffic loses with it running is what
the kernel charges for reaching those hooks at all (for a classic tracepoint: filling its
trace record) before any observer code runs, so no observer on the same hooks can cost
less.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

from traceprobe_agent.bpf_links import link_cgroup
from traceprobe_agent.cgroups import cgroup2_mount


def _source(hooks: list[str]) -> str:
    parts = []
    for hook in hooks:
        kind, _, name = hook.partition("/")
        if kind == "tracepoint":
            category, _, event = name.partition(":")
            parts.append(f"TRACEPOINT_PROBE({category}, {event}) {{ return 0; }}")
        elif kind == "raw_tracepoint":
            parts.append(f"RAW_TRACEPOINT_PROBE({name}) {{ return 0; }}")
        elif kind == "cgroup_skb":
            parts.append(f"int {name}(struct __sk_buff *skb) {{ return 1; }}")  # 1: pass
        else:
            raise SystemExit(f"hooks_only: unknown hook kind in {hook!r} "
                             "(tracepoint/, raw_tracepoint/ or cgroup_skb/)")
    return "\n".join(parts)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(hooks: list[str]) -> int:
    if not hooks:
        print(__doc__, file=sys.stderr)
        return 2
    from bcc import BPF  # Debian's python3-bpfcc

    signal.signal(signal.SIGTERM, _stop)
    prog: Any = BPF(text=_source(hooks).encode())  # tracepoints attach themselves
    fds: list[int] = []
    for hook in hooks:
        kind, _, name = hook.partition("/")
        if kind == "cgroup_skb":  # where the agent's DNS tap goes: the cgroup v2 root
            root = cgroup2_mount()
            if root is None:
                raise SystemExit(f"hooks_only: no cgroup v2 hierarchy mounted for {hook}")
            fds += link_cgroup(prog.load_func(name, BPF.CGROUP_SKB).fd, str(root))
    print('{"ready": true}', file=sys.stderr, flush=True)
    try:
        signal.pause()
    finally:
        for fd in fds:
            os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
