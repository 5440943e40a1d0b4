"""The agent-overhead benchmark's profile sorting and its hooks-only floor programs."""

from __future__ import annotations

import pytest

from benchmarks.cpuprofile import classify
from benchmarks.hooks_only import _source

# `perf script -F pid,ip,sym`, abridged from a real recording on this machine.
SCRIPT = """\
13088
\tffffffff81308623 read_tsc
\tffffffffc003820e bpf_prog_b17459d3a7f5fe4c_tracepoint__tcp__tcp_probe
\tffffffff814bca8e trace_call_bpf
\tffffffff8201f287 tcp_rcv_established

13088
\tffffffff81ff5ad9 ip_protocol_deliver_rcu
\tffffffff81e66c3b net_rx_action

13080
\tffffffff81ec246c perf_trace_inet_sock_set_state
\tffffffff8201f287 tcp_set_state

4242
\t7f00 _PyEval_EvalFrameDefault

13080
\tffffffff81e2c559 __cgroup_bpf_run_filter_skb

13088
\tffffffff81ff5ad9 bpf_lsm_socket_recvmsg

0
\tffffffff821f0a3e pv_native_safe_halt
\tffffffff821f0c95 default_idle

0
\tffffffff81e66c3b net_rx_action
\tffffffff821f0c95 do_idle
"""


def test_samples_are_sorted_by_their_stack_and_process() -> None:
    shares = classify(SCRIPT, observer_pid=4242)
    # A halted CPU is no work; softirq on the idle task's stack is.
    assert (shares.samples, shares.idle) == (7, 1)
    assert shares.kernel == pytest.approx(3 / 7)  # tcp_probe program, record fill, cgroup skb
    assert shares.process == pytest.approx(1 / 7)


def test_without_an_observer_process_its_samples_are_nobodys() -> None:
    shares = classify(SCRIPT, observer_pid=None)
    assert (shares.samples, shares.process) == (7, 0.0)
    assert shares.kernel == pytest.approx(3 / 7)


def test_an_empty_recording_is_no_samples() -> None:
    assert classify("", observer_pid=1).samples == 0


def test_the_floor_programs_cover_each_hook_kind() -> None:
    text = _source(["tracepoint/sock:inet_sock_set_state", "raw_tracepoint/sock_recv_length",
                    "cgroup_skb/dns_ingress"])
    assert "TRACEPOINT_PROBE(sock, inet_sock_set_state) { return 0; }" in text
    assert "RAW_TRACEPOINT_PROBE(sock_recv_length) { return 0; }" in text
    assert "int dns_ingress(struct __sk_buff *skb) { return 1; }" in text
    with pytest.raises(SystemExit, match="unknown hook kind"):
        _source(["kprobe/tcp_sendmsg"])


def test_the_profile_table_estimates_beyond_the_baseline_and_names_failures() -> None:
    from benchmarks.cpuprofile import Shares
    from benchmarks.report import profile_block
    from benchmarks.results import Run

    runs = [Run(-2, "baseline", "loopback-churn", prof=Shares(1000, 0.01, 0.0)),
            Run(-2, "traceprobe", "loopback-churn", prof=Shares(1000, 0.08, 0.005)),
            Run(-2, "hooks-only", "loopback-churn", error="hooks-only run failed: boom")]
    text = profile_block(runs)
    # 1 - (8% - the baseline's 1%) - 0.5% of the agent's own process
    assert "8.00%    0.50%     0.925" in text
    assert "hooks-only                       n/a             failed" in text
    assert "loopback-churn / hooks-only: hooks-only run failed: boom" in text
