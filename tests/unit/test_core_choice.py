"""Which connection core the agent loads, and what each core's plan runs (pure)."""

from __future__ import annotations

import pytest

from traceprobe_agent.features import TRACEPOINTS, KernelFeatures
from traceprobe_agent.program import SOCK_OPS, TRACEPOINT, choose_core, plan_program
from traceprobe_agent.settings import UsageError, from_inputs

NO_TRACEPOINTS = KernelFeatures("6.18", dict.fromkeys(TRACEPOINTS, False))


@pytest.mark.parametrize(("preference", "cgroup2", "refused", "expected"), [
    ("auto", True, None, (SOCK_OPS, None)),
    ("auto", False, None, (TRACEPOINT, "no cgroup v2 hierarchy is mounted")),
    ("auto", True, "the sock_ops core did not load: EPERM",
     (TRACEPOINT, "the sock_ops core did not load: EPERM")),
    ("tracepoint", True, None, (TRACEPOINT, "the tracepoint core was asked for")),
    ("sock_ops", False, None, (SOCK_OPS, None)),  # asked for: its load tells
])
def test_the_core_is_sock_ops_unless_something_says_why_not(
        preference: str, cgroup2: bool, refused: str | None,
        expected: tuple[str, str | None]) -> None:
    assert choose_core(preference, cgroup2, refused) == expected


def test_an_unknown_core_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown connection core 'ebpf'"):
        choose_core("ebpf", True)
    with pytest.raises(UsageError, match="--core"):
        from_inputs({"standalone": True, "core": "ebpf"}, {})


def test_the_sock_ops_plan_needs_no_tracepoint_and_links_by_kind() -> None:
    plan = plan_program({"bytes", "failures", "rtt"}, NO_TRACEPOINTS, 65536, core=SOCK_OPS)
    assert plan.runnable and not plan.missing and plan.problem() is None
    assert set(plan.kinds) == {"connections", "bytes", "failures", "rtt"}
    assert plan.sources == ("edge_maps.h", "sock_storage.h", "request_maps.h",
                            "dns_requests.h", "udp_datagrams.h", "sock_ops_core.c",
                            "tcp_streams.h", "stream_bytes.h", "http_heads.h",
                            "http_messages.h", "http_segments.h", "pg_fields.h",
                            "pg_messages.h", "redis_messages.h",
                            "dns_streams.h", "h2_hpack.h", "h2_frames.h",
                            "stream_segments.h", "tcp_segments.c")
    assert {"-DWITH_BYTES", "-DWITH_FAILURES", "-DWITH_RTT"} <= set(plan.cflags)
    assert "-DWITH_RETRANS" not in plan.cflags and plan.kprobes == ()
    assert plan.links == ("on_sock_create", "on_sock_ops", "on_egress", "on_ingress")
    no_bytes = plan_program({"connections"}, NO_TRACEPOINTS, 65536, core=SOCK_OPS)
    assert no_bytes.links == ("on_sock_create", "on_sock_ops")  # no per-packet programs
    # The same kernel, tracepoint core: nothing can run.
    assert not plan_program({"bytes"}, NO_TRACEPOINTS, 65536, core=TRACEPOINT).runnable


def test_udp_in_the_sock_ops_core_links_the_packet_programs_without_bytes() -> None:
    plan = plan_program({"udp"}, NO_TRACEPOINTS, 65536, core=SOCK_OPS)
    assert plan.kinds == ("connections", "udp") and not plan.missing
    assert "-DWITH_UDP" in plan.cflags and "-DWITH_BYTES" not in plan.cflags
    assert plan.links == ("on_sock_create", "on_sock_ops", "on_egress", "on_ingress",
                          "on_udp4_sendmsg", "on_udp6_sendmsg")


def test_disabled_tracepoints_need_a_core_that_attaches_them() -> None:
    with pytest.raises(UsageError, match=r"--disable-tracepoint .*: only the tracepoint core"):
        from_inputs({"standalone": True, "core": "sock_ops",
                     "disabled_tracepoints": ["tcp:tcp_probe"]}, {})
    auto = from_inputs({"standalone": True, "disabled_tracepoints": ["tcp:tcp_probe"]}, {})
    assert auto.core == "auto"
