"""Pure agent logic: feature probing, program plans, records, node configuration."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from traceprobe_agent.edges import format_ip, to_record
from traceprobe_agent.features import TRACEPOINTS, KernelFeatures, probe_kernel
from traceprobe_agent.node_config import applies, connections_ceiling, probe_view, union_config
from traceprobe_agent.probe_reports import probe_entry
from traceprobe_agent.program import BYTES_KPROBE_SOURCE, BYTES_KPROBES, SOURCE, plan_program
from traceprobe_api.records import Role

ALL_TP = dict.fromkeys(TRACEPOINTS, True)


def _features(**missing: bool) -> KernelFeatures:
    tps = dict(ALL_TP)
    for tp in missing:
        tps[tp.replace("__", ":")] = False
    return KernelFeatures("6.18", tps, btf=True)


def test_probe_kernel_reads_tracefs_and_lockdown(tmp_path: Path) -> None:
    (tmp_path / "events" / "sock" / "inet_sock_set_state").mkdir(parents=True)
    sysfs = tmp_path / "sys"
    (sysfs / "kernel" / "security").mkdir(parents=True)
    (sysfs / "kernel" / "security" / "lockdown").write_text("none integrity [confidentiality]\n")
    f = probe_kernel(tmp_path, sysfs, "6.18",
                     forced_missing=frozenset({"sock:inet_sock_set_state"}))
    assert f.lockdown == "confidentiality" and not f.btf
    assert f.tracepoints["sock:inet_sock_set_state"] is False  # forced
    assert f.tracepoints["tcp:tcp_probe"] is False  # absent from this tracefs
    f2 = probe_kernel(tmp_path, sysfs, "6.18")
    assert f2.tracepoints["sock:inet_sock_set_state"] is True


def test_plan_flags_and_degradation() -> None:
    full = plan_program({"bytes", "rtt", "udp"}, _features(), 100)
    assert full.kinds == ("connections", "bytes", "rtt", "udp")
    assert "-DMAX_CONNS=1024" in full.cflags  # floor
    assert {"-DWITH_BYTES", "-DWITH_RTT", "-DWITH_UDP", "-DHAVE_DESTROY"} <= set(full.cflags)
    assert full.problem() is None
    no_rtt = plan_program({"rtt", "bytes"}, _features(**{"tcp__tcp_probe": False}), 65536)
    assert no_rtt.runnable and "rtt" not in no_rtt.kinds and "-DWITH_RTT" not in no_rtt.cflags
    assert no_rtt.problem() == "tracepoints missing: rtt needs tcp:tcp_probe"
    dead = plan_program({"bytes"}, _features(**{"sock__inet_sock_set_state": False}), 65536)
    assert not dead.runnable and dead.kinds == ()
    with pytest.raises(ValueError, match="unknown probe kinds"):
        plan_program({"smtp"}, _features(), 1)


def test_http_runs_on_the_sock_ops_core_only() -> None:
    tracepoint = plan_program({"bytes", "http"}, _features(), 65536)
    assert "http" not in tracepoint.kinds and "-DWITH_HTTP" not in tracepoint.cflags
    assert tracepoint.runnable and tracepoint.tail_calls == ()
    assert tracepoint.problem() == "http needs the sock_ops core, which is not loaded"
    no_tp = plan_program({"http", "rtt"}, _features(**{"tcp__tcp_probe": False}), 65536)
    assert no_tp.problem() == ("tracepoints missing: rtt needs tcp:tcp_probe; "
                               "http needs the sock_ops core, which is not loaded")
    sock_ops = plan_program({"http"}, _features(), 65536, core="sock_ops")
    assert "http" in sock_ops.kinds and "-DWITH_HTTP" in sock_ops.cflags
    assert "-DWITH_BYTES" not in sock_ops.cflags  # http alone counts no bytes
    assert {"on_egress", "on_ingress"} <= set(sock_ops.links)
    assert [name for _, _, name in sock_ops.tail_calls] == ["http_step"]
    assert sock_ops.problem() is None and sock_ops.counts_requests


def test_each_database_kind_brings_its_own_step_on_the_sock_ops_core_only() -> None:
    tracepoint = plan_program({"postgres", "redis"}, _features(), 65536)
    assert tracepoint.problem() == ("postgres, redis needs the sock_ops core, which is not"
                                    " loaded")
    assert not tracepoint.counts_requests and tracepoint.tail_calls == ()
    sock_ops = plan_program({"postgres", "redis", "http"}, _features(), 65536,
                            core="sock_ops")
    assert {"-DWITH_POSTGRES", "-DWITH_REDIS", "-DWITH_HTTP"} <= set(sock_ops.cflags)
    assert sock_ops.tail_calls == (("stream_progs", 0, "http_step"),
                                   ("stream_progs", 1, "pg_step"),
                                   ("stream_progs", 2, "redis_step"))
    redis = plan_program({"redis"}, _features(), 65536, core="sock_ops")
    assert redis.counts_requests and {"on_egress", "on_ingress"} <= set(redis.links)
    assert [name for _, _, name in redis.tail_calls] == ["redis_step"]


def test_dns_lookups_are_requests_where_udp_edges_are_counted() -> None:
    both = plan_program({"dns", "udp"}, _features(), 65536, core="sock_ops")
    assert "-DWITH_DNS_REQUESTS" in both.cflags and both.counts_requests
    assert [name for _, _, name in both.tail_calls] == ["dns_step"]
    alone = plan_program({"dns"}, _features(), 65536, core="sock_ops")  # DNS over TCP
    assert "-DWITH_DNS_REQUESTS" in alone.cflags and alone.counts_requests
    assert [name for _, _, name in alone.tail_calls] == ["dns_step"]
    assert {"on_egress", "on_ingress"} <= set(alone.links)
    tracepoint = plan_program({"dns", "udp"}, _features(), 65536)
    assert "-DWITH_DNS_REQUESTS" not in tracepoint.cflags


def test_bytes_fall_back_to_kprobes_only_where_the_kernel_has_them() -> None:
    no_io = {"sock__sock_send_length": False, "sock__sock_recv_length": False}
    with_kprobes = replace(_features(**no_io), kprobes=True)
    plan = plan_program({"bytes", "rtt"}, with_kprobes, 65536)
    assert plan.kinds == ("connections", "bytes", "rtt") and plan.problem() is None
    assert "-DWITH_BYTES_KPROBE" in plan.cflags and "-DWITH_BYTES" not in plan.cflags
    assert plan.kprobes == BYTES_KPROBES
    assert plan.sources == ("edge_maps.h", SOURCE, BYTES_KPROBE_SOURCE)
    assert plan_program({"bytes"}, _features(), 65536).kprobes == ()  # tracepoints first
    without = plan_program({"bytes", "udp"}, _features(**no_io), 65536)
    assert without.kinds == ("connections",) and without.sources == ("edge_maps.h", SOURCE)
    assert without.problem() == (
        "tracepoints missing: bytes needs sock:sock_recv_length, sock:sock_send_length, "
        "kprobes (for the fallback); udp needs sock:sock_recv_length, sock:sock_send_length")


def test_format_ip_maps_dual_stack_to_ipv4() -> None:
    assert format_ip(2, bytes([10, 244, 1, 2]) + bytes(12)) == "10.244.1.2"
    mapped = bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 9])
    assert format_ip(10, mapped) == "10.0.0.9"
    assert format_ip(10, bytes(15) + b"\x01") == "::1"
    assert format_ip(10, bytes(16)) is None


def test_raw_edge_to_record() -> None:
    key = {"cgroup": 42, "tgid": 7, "port": 8080, "family": 2, "role": 2,
           "laddr": bytes([10, 0, 0, 1]) + bytes(12), "raddr": bytes([10, 0, 0, 2]) + bytes(12)}
    val = {"opened": 3, "closed": 2, "bytes_sent": 10, "comm": "nginx"}
    now = datetime.now(UTC)
    rec = to_record(key, val, "n1", now, now, lambda cg: f"/pods/{cg}")
    assert (rec.role, rec.local_port, rec.remote_port, rec.pid, rec.cgroup_path) == (
        Role.SERVER, 8080, None, 7, "/pods/42")
    assert (rec.local_ip, rec.remote_ip, rec.opened, rec.comm) == ("10.0.0.1", "10.0.0.2", 3,
                                                                   "nginx")
    udp = to_record({**key, "role": 3, "tgid": 0}, val, "n1", now, now, lambda cg: None)
    assert udp.transport == "udp" and udp.local_ip is None and udp.pid is None
    assert (udp.datagrams_sent, udp.datagrams_received, udp.opened) == (3, 2, 0)
    # UDP with a peer (the sock_ops core): a client keyed by the peer's port.
    peer = to_record({**key, "role": 4}, val, "n1", now, now, lambda cg: None)
    assert (peer.role, peer.transport, peer.remote_ip, peer.remote_port, peer.local_port) == (
        Role.CLIENT, "udp", "10.0.0.2", 8080, None)
    assert (peer.datagrams_sent, peer.datagrams_received, peer.closed) == (3, 2, 0)


def test_opening_times_become_wall_clock_inside_the_interval() -> None:
    """The kernel's CLOCK_MONOTONIC opening times, placed on the wall clock by the
    drain's own pair of readings and clamped to the interval."""
    key = {"cgroup": 1, "tgid": 7, "port": 5432, "family": 2, "role": 1,
           "laddr": bytes(16), "raddr": bytes([10, 0, 0, 2]) + bytes(12)}
    start = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    end = start + timedelta(seconds=10)
    mono_end = 5_000_000_000_000
    val = {"opened": 2, "first_open_ns": mono_end - 7_500_000_000,  # 2.5 s in
           "last_open_ns": mono_end - 250_000}                       # 0.25 ms before the end
    rec = to_record(key, val, "n1", start, end, lambda cg: None, mono_end)
    assert rec.active_from == start + timedelta(seconds=2.5)
    assert rec.active_until == end - timedelta(microseconds=250)
    older = to_record(key, {**val, "first_open_ns": mono_end - 60_000_000_000}, "n1", start,
                      end, lambda cg: None, mono_end)
    assert older.active_from == start  # opened before the interval: counts from its start
    none = to_record(key, {"bytes_sent": 5, "first_open_ns": 0, "last_open_ns": 0}, "n1",
                     start, end, lambda cg: None, mono_end)
    assert none.active_from is None and none.active_until is None
    assert "first_open_ns" not in none.model_dump()


def _probe(name: str, gen: int = 1, deleting: bool = False, **spec: object) -> object:
    meta = {"name": name, "namespace": "shop", "generation": gen}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return probe_view({"kind": "TraceProbe", "metadata": meta, "spec": spec})


def test_union_config_and_node_selection() -> None:
    a = _probe("a", probes=["connections", "rtt"], interval="30s",
               limits={"maxConnections": 2048}, nodeSelector={"pool": "web"})
    b = _probe("b", probes=["bytes"], interval="1m30s", limits={"maxConnections": 100000})
    gone = _probe("c", deleting=True, probes=["udp"])
    cfg = union_config([a, b, gone])  # type: ignore[list-item]
    assert cfg is not None
    assert cfg.kinds == frozenset({"connections", "rtt", "bytes"})
    # A namespaced probe cannot size the node's maps beyond the ceiling...
    assert (cfg.max_connections, cfg.interval_seconds) == (65536, 30.0)
    assert union_config([gone]) is None  # type: ignore[list-item]
    # ...which a cluster-scoped probe sets.
    platform = probe_view({"kind": "ClusterTraceProbe", "metadata": {"name": "p"},
                           "spec": {"limits": {"maxConnections": 80000}}})
    assert connections_ceiling([a, b, platform]) == 80000  # type: ignore[list-item]
    assert union_config([a, b, platform]).max_connections == 80000  # type: ignore[list-item, union-attr]
    big = probe_view({"kind": "ClusterTraceProbe", "metadata": {"name": "q"},
                      "spec": {"limits": {"maxConnections": 500000}}})
    assert union_config([b, big]).max_connections == 500000  # type: ignore[list-item, union-attr]
    assert applies(a, {"pool": "web", "zone": "1"}) and not applies(a, {"pool": "db"})  # type: ignore[arg-type]


def test_probe_entry_states() -> None:
    features = _features(**{"tcp__tcp_probe": False})
    plan = plan_program({"connections", "rtt"}, features, 4096)
    rtt_probe = _probe("r", gen=3, probes=["connections", "rtt"])
    entry = probe_entry(rtt_probe, plan, ["tracepoint/sock:inet_sock_set_state"],  # type: ignore[arg-type]
                        {"conns": (5, 4096)}, {"conn_map_full": 0}, None).to_dict()
    assert entry["state"] == "Degraded" and entry["reason"] == "TracepointMissing"
    assert entry["probe"] == {"kind": "TraceProbe", "name": "r", "generation": 3,
                              "namespace": "shop"}
    assert entry["mapUsage"] == [{"name": "conns", "entries": 5, "capacity": 4096}]
    plain = probe_entry(_probe("p", probes=["connections"]), plan, [], {}, {}, None).to_dict()  # type: ignore[arg-type]
    assert plain["state"] == "Attached"
    failed = probe_entry(_probe("f"), plan, [], {}, {}, "BpfUnavailable: no headers").to_dict()  # type: ignore[arg-type]
    assert (failed["state"], failed["reason"]) == ("Failed", "LoadFailed")
    detached = probe_entry(_probe("d", deleting=True), plan, [], {}, {}, None).to_dict()  # type: ignore[arg-type]
    assert detached["state"] == "Detached"
    full = probe_entry(_probe("p", probes=["connections"]), plan, [], {},  # type: ignore[arg-type]
                       {"conn_map_full": 7}, None, {"conn_map_full": 7}).to_dict()
    assert (full["state"], full["reason"]) == ("Degraded", "MapFull")
    assert "7 dropped" in full["message"] and "spec.limits.maxConnections" in full["message"]
    assert full["drops"] == {"conn_map_full": 7}
    greedy = _probe("g", limits={"maxConnections": 1_000_000})
    clamped = probe_entry(greedy, plan_program({"connections"}, _features(), 65536), [],  # type: ignore[arg-type]
                          {}, {}, None, ceiling=65536).to_dict()
    assert (clamped["state"], clamped["reason"]) == ("Attached", "LimitClamped")
    assert "1000000" in clamped["message"] and "at most 65536" in clamped["message"]


def test_drop_watch_marks_recent_full_maps_only() -> None:
    from traceprobe_agent.probe_reports import DropWatch

    watch = DropWatch(window_seconds=60)
    assert watch.update({"conn_map_full": 0, "untracked_io": 9}, now=0) == {}
    assert watch.update({"conn_map_full": 3}, now=10) == {"conn_map_full": 3}
    assert watch.update({"conn_map_full": 3}, now=50) == {"conn_map_full": 3}
    assert watch.update({"conn_map_full": 3}, now=75) == {}  # no new drops for a minute
    assert watch.update({"conn_map_full": 0}, now=80) == {}  # program reloaded: counters reset


def test_conntrack_dnat_events_become_backends_of_client_records() -> None:
    from traceprobe_agent.nat_events import NatTable, parse_event

    line = ("    [NEW] tcp      6 120 SYN_SENT src=10.0.0.1 dst=10.96.0.20 sport=52222 "
            "dport=80 [UNREPLIED] src=10.0.1.2 dst=10.0.0.1 sport=8080 dport=52222")
    flow = parse_event(line)
    assert flow is not None and flow.key == ("10.0.0.1", "10.96.0.20", 80)
    assert flow.backend == "10.0.1.2:8080"
    assert parse_event(line.replace("src=10.0.1.2", "src=10.96.0.20")) is None  # not NATed
    assert parse_event("[DESTROY] tcp 6 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2") is None
    v6 = parse_event("[NEW] tcp 6 120 SYN_SENT src=fd00::1 dst=fd00:96::1 sport=1 dport=80 "
                     "[UNREPLIED] src=fd00::9 dst=fd00::1 sport=8080 dport=1")
    assert v6 is not None and v6.backend == "[fd00::9]:8080"

    table = NatTable(keep_drains=1)
    for _ in range(2):
        table.add(flow)
    table.add(parse_event(line.replace("src=10.0.1.2", "src=10.0.1.3")))  # type: ignore[arg-type]
    from datetime import UTC, datetime

    from traceprobe_api.records import ConnectionRecord, Role
    t = datetime.now(UTC)
    client = ConnectionRecord(node="n", role=Role.CLIENT, transport="tcp", family="ipv4",
                              local_ip="10.0.0.1", remote_ip="10.96.0.20", remote_port=80,
                              interval_start=t, interval_end=t, opened=3)
    (annotated,) = table.annotate([client])
    assert annotated.backends == {"10.0.1.2:8080": 2, "10.0.1.3:8080": 1}
    table.settle_seconds = 0.0  # from here on, flows are short on purpose
    assert table.annotate([client])[0].backends == {}  # consumed once
    table.add(flow)
    table.annotate([])
    table.annotate([])
    assert table.annotate([client])[0].backends == {}  # aged out unmatched
    assert table.unclaimed_flows == 1


def test_each_record_takes_as_many_flows_as_it_counted_attempts() -> None:
    """The parts of a Service edge never exceed it: a record claims one flow per
    attempt (a refused or timed-out one too), oldest first, and the rest wait for the
    next record; flows still unread at the drain are waited for, briefly."""
    import threading
    import time
    from datetime import UTC, datetime

    from traceprobe_agent.nat_events import NatFlow, NatTable
    from traceprobe_api.records import ConnectionRecord, Role

    key = ("10.0.0.1", "10.96.0.20", 80)
    table = NatTable(settle_seconds=5.0)
    for backend in ["a:1", "b:1", "a:1", "b:1", "a:1"]:
        table.add(NatFlow(key, backend))
    t = datetime.now(UTC)

    def client(opened: int, refused: int = 0, timeouts: int = 0) -> ConnectionRecord:
        return ConnectionRecord(node="n", role=Role.CLIENT, transport="tcp", family="ipv4",
                                local_ip=key[0], remote_ip=key[1], remote_port=key[2],
                                interval_start=t, interval_end=t, opened=opened,
                                refused=refused, timeouts=timeouts)

    first, second = table.annotate([client(1, refused=1), client(1)])
    assert first.backends == {"a:1": 1, "b:1": 1} and second.backends == {"a:1": 1}
    threading.Timer(0.3, lambda: table.add(NatFlow(key, "c:1"))).start()
    started = time.monotonic()
    (third,) = table.annotate([client(2, timeouts=1)])  # 2 queued, 1 on its way
    assert third.backends == {"b:1": 1, "a:1": 1, "c:1": 1}
    assert 0.2 < time.monotonic() - started < 4.0  # waited for it, not for the bound
    table.settle_seconds = 0.05
    (short,) = table.annotate([client(2)])  # its events were lost: nothing to take
    assert short.backends == {} and table.unclaimed_flows == 0


def test_edge_maps_are_sized_with_the_cpu_count() -> None:
    """Per-CPU edge values: a 64-CPU node gets fewer entries, within the same bytes."""
    small = plan_program({"bytes"}, _features(), 1_000_000, cpus=2)
    big = plan_program({"bytes"}, _features(), 1_000_000, cpus=64)
    assert small.max_edges == 250_000 and "-DMAX_EDGES=250000" in small.cflags
    assert big.max_edges == (64 << 20) // (128 * 64) == 8192
    assert plan_program({"bytes"}, _features(), 1024, cpus=512).max_edges == 1024  # floor
