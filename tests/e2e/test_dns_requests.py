"""DNS lookups as requests on the sock_ops core (real eBPF, probe kinds udp and dns):
each query and its response between netns pods, by question type and response code,
on the client's and the resolver's side, against what the resolver answered.

Truth: tests/harness/dns_server.py, a resolver and an authoritative server written
independently of the agent's parser.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from harness.recorder import Recorder
from harness.traffic_control import PY, stop

DNS = str(Path(__file__).resolve().parents[1] / "harness" / "dns_server.py")
LOOKUPS = [("shop.example", "A")] * 3 + [("v6.example", "AAAA")] * 2 \
    + [("missing.example", "A")] * 2 + [("shop.example", "AAAA")]


def _rows(rec: Recorder, **match: Any) -> tuple[Counter[tuple[str, int]], int]:
    counts: Counter[tuple[str, int]] = Counter()
    timed = 0
    for record in rec.records:
        if all(getattr(record, k) == v for k, v in match.items()):
            for row in record.requests or ():
                assert row.protocol == "dns"
                counts[(row.method, row.status)] += row.count
                timed += sum(row.duration_buckets.values())
    return counts, timed


def test_dns_lookups_are_requests_by_type_and_response_code(
        pod_factory: Any, bpf_ready: None) -> None:
    a = pod_factory.create("dns-asker", "traffic")
    b = pod_factory.create("dns-answerer", "traffic")
    server = b.popen([PY, DNS, "serve", "53", "shop.example=10.1.2.3", "v6.example=fd00::7"],
                     stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    rec = Recorder(frozenset({"connections", "udp", "dns"}), core="sock_ops")
    try:
        truth: Counter[tuple[str, int]] = Counter()
        for name, qtype in LOOKUPS:
            got = json.loads(a.run([PY, DNS, "resolve", b.ip, name, "--type", qtype]).stdout)
            truth[(qtype, 0 if got["addresses"] else 3)] += 1  # NOERROR, else NXDOMAIN
        assert truth == Counter({("A", 0): 3, ("AAAA", 0): 2, ("A", 3): 2, ("AAAA", 3): 1})
        rec.flush()
        asked = _rows(rec, role="client", cgroup_id=a.cgroup_id, remote_port=53)
        answered = _rows(rec, role="server", cgroup_id=b.cgroup_id, local_port=53)
        assert asked == (truth, len(LOOKUPS))
        assert answered == (truth, len(LOOKUPS))
        counters = rec.agent.stats.kernel_counters
        assert (counters["dns_unmatched"], counters["dns_pending_full"]) == (0, 0)
        # The datagrams themselves are still the edge's: one query and one answer each.
        assert rec.edge(role="client", cgroup_id=a.cgroup_id, remote_port=53)[
            "datagrams_sent"] == len(LOOKUPS)
    finally:
        stop(server)
        rec.agent.close()


def test_dns_over_tcp_lookups_are_requests_too(pod_factory: Any, bpf_ready: None) -> None:
    """Lookups over TCP (each message after its length, many on one connection, asked
    in turn and pipelined) with the probe's dns kind alone: the same requests by type and
    response code, on both sides."""
    a = pod_factory.create("dns-tcp-asker", "traffic")
    b = pod_factory.create("dns-tcp-answerer", "traffic")
    server = b.popen([PY, DNS, "serve", "53", "shop.example=10.1.2.3", "v6.example=fd00::7"],
                     stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    rec = Recorder(frozenset({"connections", "dns"}), core="sock_ops")
    try:
        questions = [f"{name}:{qtype}" for name, qtype in LOOKUPS]
        answers = json.loads(a.run([PY, DNS, "resolve-tcp", b.ip, *questions]).stdout)
        answers += json.loads(a.run([PY, DNS, "resolve-tcp", b.ip, *questions[:5],
                                     "--pipeline"]).stdout)
        truth = Counter((r["type"], r["rcode"]) for r in answers)
        assert truth == Counter({("A", 0): 6, ("AAAA", 0): 4, ("A", 3): 2, ("AAAA", 3): 1})
        rec.flush()
        asked = _rows(rec, role="client", cgroup_id=a.cgroup_id, remote_port=53)
        answered = _rows(rec, role="server", cgroup_id=b.cgroup_id, local_port=53)
        assert asked == (truth, len(answers))
        assert answered == (truth, len(answers))
        counters = rec.agent.stats.kernel_counters
        assert (counters["dns_unmatched"], counters["dns_pending_full"]) == (0, 0)
    finally:
        stop(server)
        rec.agent.close()
