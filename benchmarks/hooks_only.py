"""The floor: empty BPF programs on the hooks one connection core's agent attaches.

`python -m benchmarks.hooks_only KIND/NAME ...` (names as the agent's ready message
lists them: the tracepoint core's `tracepoint/sock:inet_sock_set_state`,
`raw_tracepoint/sock_recv_length`; the sock_ops core's `cgroup/on_sock_create`,
`cgroup/on_sock_ops`, `cgroup/on_egress`; either's `cgroup_skb/dns_ingress`) attaches a
program that returns at once to each (cgroup programs: 1, let the socket or packet
pass; linked at the cgroup v2 root like the agent's), prints `{"ready": true}` and waits
for SIGTERM. What the traffic loses with it running is what the kernel charges for
reaching those hooks at all (for a classic tracepoint: filling its trace record) before
any observer code runs, so no observer on the same hooks can cost less. An empty
sock_ops program turns on no callbacks (state changes, retransmits), so that core's
floor leaves out the callbacks its agent asks for: they count as the agent's cost.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

from traceprobe_agent.bcc_runtime import SOCK_OPS_PROGRAMS, load_cgroup_func
from traceprobe_agent.bpf_links import CgroupAttach, link_cgroup
from traceprobe_agent.cgroups import cgroup2_mount

# BCC program type -> the context its programs take.
_CONTEXT = {"CGROUP_SKB": "struct __sk_buff *skb", "CGROUP_SOCK": "struct bpf_sock *sk",
            "SOCK_OPS": "struct bpf_sock_ops *skops",
            "CGROUP_SOCK_ADDR": "struct bpf_sock_addr *ctx"}


def _cgroup_hook(kind: str, name: str) -> tuple[str, CgroupAttach] | None:
    """(BCC program type, attach point) of a cgroup hook; None for a tracepoint."""
    if kind == "cgroup_skb":  # the DNS tap
        return "CGROUP_SKB", CgroupAttach.INET_INGRESS
    if kind == "cgroup":
        if name not in SOCK_OPS_PROGRAMS:
            raise SystemExit(f"hooks_only: no sock_ops core program {name!r} "
                             f"(of {', '.join(SOCK_OPS_PROGRAMS)})")
        return SOCK_OPS_PROGRAMS[name]
    return None


def _source(hooks: list[str]) -> str:
    parts = []
    for hook in hooks:
        kind, _, name = hook.partition("/")
        if kind == "tracepoint":
            category, _, event = name.partition(":")
            parts.append(f"TRACEPOINT_PROBE({category}, {event}) {{ return 0; }}")
        elif kind == "raw_tracepoint":
            parts.append(f"RAW_TRACEPOINT_PROBE({name}) {{ return 0; }}")
        elif kind in ("cgroup_skb", "cgroup"):
            cgroup = _cgroup_hook(kind, name)
            assert cgroup is not None
            parts.append(f"int {name}({_CONTEXT[cgroup[0]]}) {{ return 1; }}")
        else:
            raise SystemExit(f"hooks_only: unknown hook kind in {hook!r} "
                             "(tracepoint/, raw_tracepoint/, cgroup_skb/ or cgroup/)")
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
    try:
        for hook in hooks:
            kind, _, name = hook.partition("/")
            if (cgroup := _cgroup_hook(kind, name)) is None:
                continue
            root = cgroup2_mount()  # where the agent links its cgroup programs
            if root is None:
                raise SystemExit(f"hooks_only: no cgroup v2 hierarchy mounted for {hook}")
            prog_type, attach = cgroup
            fn = load_cgroup_func(prog, BPF, name, prog_type, attach)
            fds += link_cgroup(fn.fd, str(root), attach)
        print('{"ready": true}', file=sys.stderr, flush=True)
        signal.pause()
    finally:
        for fd in fds:
            os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
