"""The sock_ops core loads and links for every mix of the kinds that change what it is
built from (real eBPF): a part guarded by one kind must never be needed by another."""

from __future__ import annotations

import pytest

from traceprobe_agent.bcc_runtime import ConnTracker
from traceprobe_agent.cgroups import cgroup2_mount
from traceprobe_agent.program import SOCK_OPS, bpf_source, plan_program

BASE = {"connections", "failures", "bytes", "retransmits", "rtt"}


MIXES = [(), ("udp",), ("udp", "dns"), ("dns",), ("http",), ("grpc",), ("postgres",),
         ("redis",), ("http", "grpc", "postgres", "redis", "udp", "dns")]


@pytest.mark.parametrize("extra", MIXES, ids=lambda e: "+".join(e) or "base")
def test_the_core_loads_and_links_for_each_mix_of_kinds(bpf_ready: None,
                                                        extra: tuple[str, ...]) -> None:
    root = cgroup2_mount()
    assert root is not None, "no cgroup v2 hierarchy"
    plan = plan_program(BASE | set(extra), None, 65536, core=SOCK_OPS)  # type: ignore[arg-type]  # no tracepoints needed
    tracker = ConnTracker(bpf_source(*plan.sources), list(plan.cflags), cgroup_dir=str(root),
                          links=plan.links, max_connections=plan.max_connections,
                          tail_calls=plan.tail_calls, requests=plan.counts_requests)
    try:
        assert {f"cgroup/{name}" for name in plan.links} <= set(tracker.program_ids())
    finally:
        tracker.close()
