"""The agent's records against known traffic between netns pods (real eBPF), with
each connection core (the module runs once per core).

Truth comes from the generator (tests/harness/traffic.py prints what it did)
and from the kernel's own per-socket counters (`ss -ti`), never from the agent.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.recorder import ALL, Recorder
from harness.traffic_control import PY, TRAFFIC, dial, serve, stop
from traceprobe_agent.agent import Agent, AgentConfig
from traceprobe_api.records import ConnectionRecord

DNS = str(Path(__file__).resolve().parents[1] / "harness" / "dns_server.py")


@pytest.fixture(scope="module", params=["sock_ops", "tracepoint"])
def recorder(bpf_ready: None, request: pytest.FixtureRequest) -> Iterator[Recorder]:
    rec = Recorder(core=request.param)
    yield rec
    rec.agent.close()


@pytest.fixture
def pods(pod_factory: Any) -> tuple[Any, Any]:
    a = pod_factory.create("client-0", "traffic", owner=("Deployment", "client"))
    b = pod_factory.create("server-0", "traffic", owner=("StatefulSet", "server"))
    return a, b


def test_short_connections_match_exactly(recorder: Recorder, pods: tuple[Any, Any]) -> None:
    a, b = pods
    server = serve(b, 8080, 3000)
    try:
        truth = dial(a, b.ip, 8080, 1000, "--count", "5")
        truth6 = dial(a, b.ip6, 8080, 700, "--count", "3")
    finally:
        stop(server)
    assert truth["completed"] == 5 and truth6["completed"] == 3
    recorder.flush()
    client = recorder.edge(role="client", local_ip=a.ip, remote_ip=b.ip, remote_port=8080)
    assert client == {"opened": 5, "closed": 5, "refused": 0, "timeouts": 0, "resets": 0,
                      "bytes_sent": truth["sent"], "bytes_received": truth["received"],
                      "retransmits": 0, "rtt_samples": 5, "datagrams_sent": 0,
                      "datagrams_received": 0}
    srv = recorder.edge(role="server", local_ip=b.ip, local_port=8080, remote_ip=a.ip)
    assert (srv["opened"], srv["closed"], srv["bytes_sent"], srv["bytes_received"]) == (
        5, 5, truth["received"], truth["sent"])
    # IPv6 between the same pods, on its own edge.
    v6 = recorder.edge(role="client", local_ip=a.ip6, remote_ip=b.ip6, remote_port=8080)
    assert (v6["opened"], v6["bytes_sent"], v6["bytes_received"]) == (
        3, truth6["sent"], truth6["received"])
    assert recorder.one(role="client", remote_ip=b.ip6).family == "ipv6"
    # Each side is attributed to its own pod's cgroup and process.
    assert recorder.one(role="client", remote_ip=b.ip).cgroup_id == a.cgroup_id
    server_rec = recorder.one(role="server", local_ip=b.ip, local_port=8080)
    assert server_rec.cgroup_id == b.cgroup_id and server_rec.pid == server.pid


def test_external_peers_named_by_the_dns_answers_the_client_got(
        recorder: Recorder, pod_factory: Any) -> None:
    """A pod resolves two names at a DNS server (another netns), then connects to the
    addresses it was given, and to one it was never given: the agent names the first
    two by the answers (IPv4 and IPv6, through a CNAME), the third not at all."""
    client = pod_factory.create("client-dns", "traffic", owner=("Deployment", "client"))
    dns = pod_factory.create_external("dns-server")
    partner = pod_factory.create_external("partner")
    unnamed = pod_factory.create_external("unnamed")
    dns_server = dns.popen([PY, DNS, "serve", "53", f"api.partner.example={partner.ip}",
                            f"v6.partner.example={partner.ip6}"], stdout=subprocess.PIPE,
                           text=True)
    assert dns_server.stdout is not None and dns_server.stdout.readline().strip() == "ready"
    servers = [serve(partner, 8443, 200), serve(unnamed, 8443, 200)]
    try:
        v4 = json.loads(client.run([PY, DNS, "resolve", dns.ip, "API.partner.example"]).stdout)
        v6 = json.loads(client.run([PY, DNS, "resolve", dns.ip, "v6.partner.example",
                                    "--type", "AAAA"]).stdout)
        assert v4 == {"addresses": [partner.ip]} and v6 == {"addresses": [partner.ip6]}
        named = dial(client, partner.ip, 8443, 100, "--count", "2")
        named6 = dial(client, partner.ip6, 8443, 100)
        never_resolved = dial(client, unnamed.ip, 8443, 100)
    finally:
        stop(dns_server, *servers)
    assert (named["completed"], named6["completed"], never_resolved["completed"]) == (2, 1, 1)
    recorder.flush()
    by_name = recorder.one(role="client", remote_ip=partner.ip, remote_port=8443)
    assert by_name.remote_dns_name == "api.partner.example"
    assert recorder.edge(role="client", remote_ip=partner.ip, remote_port=8443)["opened"] == 2
    assert recorder.one(role="client", remote_ip=partner.ip6).remote_dns_name == \
        "v6.partner.example"
    assert recorder.one(role="client", remote_ip=unnamed.ip).remote_dns_name is None
    counters = recorder.agent.stats.kernel_counters
    assert counters["dns_responses"] >= 2 and counters["dns_responses_lost"] == 0
    assert counters["dns_answers"] >= 2


def test_failures_refused_reset_timeout(recorder: Recorder, pods: tuple[Any, Any]) -> None:
    a, b = pods
    refused = dial(a, b.ip, 8081, 10, "--count", "3")  # nothing listens on 8081
    server = serve(b, 8082, 0, "--reset")
    try:
        reset = dial(a, b.ip, 8082, 100, "--count", "2", "--hold", "0.3")
    finally:
        stop(server)
    # An unanswered SYN: the server pod drops it; one SYN retry keeps this short.
    b.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "8083", "-j", "DROP"])
    a.run(["sysctl", "-qw", "net.ipv4.tcp_syn_retries=1"])
    timeout = dial(a, b.ip, 8083, 10, "--timeout", "30")
    assert refused["failed"] == {"ECONNREFUSED": 3}
    # The RST surfaces at whichever call comes next: recv, send or shutdown.
    assert sum(reset["failed"].values()) == 2
    assert set(reset["failed"]) <= {"ECONNRESET", "ENOTCONN", "EPIPE"}
    assert timeout["failed"] == {"ETIMEDOUT": 1}
    recorder.flush()
    assert recorder.edge(role="client", remote_ip=b.ip, remote_port=8081)["refused"] == 3
    resets = recorder.edge(role="client", remote_ip=b.ip, remote_port=8082)
    assert (resets["opened"], resets["resets"]) == (2, 2)
    assert recorder.edge(role="server", local_ip=b.ip, local_port=8082)["resets"] == 2
    timed_out = recorder.edge(role="client", remote_ip=b.ip, remote_port=8083)
    assert (timed_out["timeouts"], timed_out["refused"], timed_out["opened"]) == (1, 0, 0)


def _ss(pod: Any, port: int) -> dict[str, int]:
    """The kernel's own counters for the connection to/from `port` (ss -ti)."""
    out = pod.run(["ss", "-tinH", f"( sport = :{port} or dport = :{port} )"]).stdout
    fields = {k: int(v) for k, v in re.findall(r"\b(bytes_acked|bytes_received):(\d+)", out)}
    retrans = re.search(r"retrans:\d+/(\d+)", out)
    fields["retrans_total"] = int(retrans.group(1)) if retrans else 0
    return fields


def test_long_lived_bytes_and_retransmits_match_the_kernel(
        recorder: Recorder, pods: tuple[Any, Any]) -> None:
    a, b = pods
    # Every 20th packet arriving at the server is lost, so the client retransmits
    # (deterministic: with GRO a 3 MB transfer may be only ~100 packets, and a
    # random 5 % could drop none). netem would do; this kernel lacks it.
    b.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "8084", "-m", "statistic",
           "--mode", "nth", "--every", "20", "--packet", "0", "-j", "DROP"])
    server = serve(b, 8084, 1000)
    try:
        dialer = a.popen([PY, TRAFFIC, "dial", b.ip, "8084", "3000000", "--hold", "6"],
                         stdout=subprocess.PIPE, text=True)
        time.sleep(4)  # 3 MB sent and acknowledged; the connection stays open
        recorder.flush()  # an interval ends mid-connection
        kernel_client, kernel_server = _ss(a, 8084), _ss(b, 8084)
        so_far = recorder.edge(role="client", remote_ip=b.ip, remote_port=8084)
        assert kernel_client["bytes_acked"] - 1 == 3_000_000  # SYN counts one
        assert so_far["bytes_sent"] == 3_000_000 and so_far["closed"] == 0
        served = recorder.edge(role="server", local_ip=b.ip, local_port=8084)
        assert served["bytes_received"] == kernel_server["bytes_received"] == 3_000_000
        out, _ = dialer.communicate(timeout=30)
    finally:
        stop(server)
    assert json.loads(out)["completed"] == 1
    recorder.flush()
    total = recorder.edge(role="client", remote_ip=b.ip, remote_port=8084)
    assert (total["opened"], total["closed"], total["bytes_sent"]) == (1, 1, 3_000_000)
    # RTT: sampled at most once a second while packets flow, and once at close.
    assert 1 <= total["rtt_samples"] <= 12
    assert kernel_client["retrans_total"] > 0, "the test induced no loss"
    if recorder.agent.stats.core == "sock_ops":  # the kernel's own counter, as ss shows it
        assert so_far["retransmits"] == kernel_client["retrans_total"]
        assert total["retransmits"] >= kernel_client["retrans_total"]  # the FIN may be lost
    else:  # tracepoint counts retransmitted skbs; the kernel, segments (an skb may carry
        # several), so ours is bounded by, and non-zero like, the kernel's
        assert 0 < total["retransmits"] <= kernel_client["retrans_total"]


def test_records_say_when_their_connections_opened(recorder: Recorder,
                                                  pods: tuple[Any, Any]) -> None:
    """activeFrom/activeUntil: the first and the last connection's opening, on both
    sides (what the map names a reused address by); a connection open before the
    interval counts from its start."""
    a, b = pods
    servers = [serve(b, 8086, 100), serve(b, 8087, 100)]  # the held one on its own
    try:
        recorder.flush()
        mark = len(recorder.records)
        started = datetime.now(UTC)
        truth = dial(a, b.ip, 8086, 10, "--count", "2", "--every", "1.5")
        ended = datetime.now(UTC)
        held = a.popen([PY, TRAFFIC, "dial", b.ip, "8087", "10", "--hold", "3"],
                       stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        recorder.flush()  # the held connection is open across this drain
        later = len(recorder.records)
        out, _ = held.communicate(timeout=30)
    finally:
        stop(*servers)
    assert truth["completed"] == 2 and json.loads(out)["completed"] == 1
    recorder.flush()

    def of(role: str, port: int, records: list[ConnectionRecord]) -> list[ConnectionRecord]:
        return [r for r in records if r.role == role and port in (r.local_port, r.remote_port)]

    for role in ("client", "server"):
        (first,) = of(role, 8086, recorder.records[mark:later])
        since, until = first.active_from, first.active_until
        assert first.opened == 2 and since is not None and until is not None
        assert started <= since < until <= ended, (role, started, since, until, ended)
        assert 1.0 <= (until - since).total_seconds() <= 3.0  # --every 1.5 apart
        rest = of(role, 8087, recorder.records[later:])
        assert rest and all(r.opened == 0 and r.active_from == r.interval_start for r in rest)


def test_a_failing_interval_is_counted_and_the_next_one_reports(
        pods: tuple[Any, Any], bpf_ready: None) -> None:
    """Failure injection: the first interval's processing raises; the agent logs and
    counts it and keeps running, and the next interval's connections all arrive."""
    a, b = pods
    failed: list[str] = []

    def enrich(record: ConnectionRecord) -> ConnectionRecord:
        if not failed:
            failed.append(record.comm)
            raise RuntimeError("injected")
        return record

    got: list[ConnectionRecord] = []
    agent = Agent("node-1", got.extend, enrich=enrich)
    agent.apply(AgentConfig(ALL, 65536, 1.0))
    try:
        server = serve(b, 8088, 10)
        try:
            assert dial(a, b.ip, 8088, 10)["completed"] == 1
            assert agent.tick() == [] and agent.stats.tick_errors == 1 and not got
            truth = dial(a, b.ip, 8088, 10, "--count", "2")
            agent.tick()
        finally:
            stop(server)
        assert truth["completed"] == 2 and agent.stats.tick_errors == 1
        assert sum(r.opened for r in got if r.role == "client" and r.remote_port == 8088) == 2
    finally:
        agent.close()


def test_concurrent_connections_are_all_counted(recorder: Recorder,
                                                pods: tuple[Any, Any]) -> None:
    a, b = pods
    server = serve(b, 8085, 500)
    try:
        truth = dial(a, b.ip, 8085, 200, "--count", "60", "--parallel", "20")
    finally:
        stop(server)
    recorder.flush()
    client = recorder.edge(role="client", remote_ip=b.ip, remote_port=8085)
    assert truth["completed"] == 60
    assert (client["opened"], client["closed"], client["bytes_sent"],
            client["bytes_received"]) == (60, 60, 60 * 200, 60 * 500)
    assert recorder.agent.stats.kernel_counters["conn_map_full"] == 0
    assert recorder.agent.stats.kernel_counters["edge_map_full"] == 0
