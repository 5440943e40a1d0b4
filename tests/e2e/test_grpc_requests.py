"""gRPC calls over cleartext HTTP/2 from the agent's records against what a real grpcio
client got from a real grpcio server between netns pods (real eBPF, the sock_ops core):
each call counted once on both sides with its status code, streams multiplexed on one
connection, HPACK's dynamic table followed; latency against the client's own timing.

Truth: tests/harness/grpc_traffic.py's client, which records each call's status and time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

from harness.recorder import Recorder
from harness.traffic_control import GRPC_TRAFFIC as GRPC
from harness.traffic_control import stop
from harness.truth import latency_disagreements

PORT = 50051
KINDS = frozenset({"connections", "bytes", "grpc"})


def _serve(pod: Any) -> subprocess.Popen[str]:
    proc: subprocess.Popen[str] = pod.popen([sys.executable, GRPC, "serve", str(PORT)],
                                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def call(pod: Any, host: str, *requests: str, concurrent: bool = False) -> list[dict[str, Any]]:
    out = pod.run([sys.executable, GRPC, "call", host, str(PORT), *requests,
                   *(["--concurrent"] if concurrent else [])], timeout=120)
    return list(json.loads(out.stdout))


def calls_seen(rec: Recorder, **match: Any) -> tuple[Counter[int], Counter[int]]:
    """grpc status -> calls, and latency bucket -> calls, of matching records."""
    counts: Counter[int] = Counter()
    buckets: Counter[int] = Counter()
    for record in rec.records:
        if all(getattr(record, k) == v for k, v in match.items()):
            for row in record.requests or ():
                assert row.protocol == "grpc", row
                counts[row.status] += row.count
                buckets.update(row.duration_buckets)
    return counts, buckets


def test_grpc_calls_by_status_match_what_the_client_got(pod_factory: Any,
                                                        bpf_ready: None) -> None:
    """OK and five kinds of error on one connection in turn (grpc-status first as a
    literal, then from the server's dynamic table; errors as trailers-only responses),
    then 12 calls at once, multiplexed: every call once, with its status, both sides."""
    a = pod_factory.create("grpc-client", "traffic")
    b = pod_factory.create("grpc-server", "traffic")
    server = _serve(b)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        statuses = [0, 0, 5, 0, 7, 5, 13, 0, 3, 14, 0, 0]
        results = call(a, b.ip, *[f"status:{s}" for s in statuses])
        results += call(a, b.ip, *[f"status:{s}" for s in statuses], concurrent=True)
        truth = Counter(r["status"] for r in results)
        assert truth == Counter({0: 12, 5: 4, 7: 2, 13: 2, 3: 2, 14: 2})
        rec.flush()
        client, _ = calls_seen(rec, role="client", cgroup_id=a.cgroup_id, remote_port=PORT)
        served, _ = calls_seen(rec, role="server", cgroup_id=b.cgroup_id, local_port=PORT)
        assert client == truth
        assert served == truth
        counters = rec.agent.stats.kernel_counters
        assert (counters["http_unmatched"], counters["http_pending_full"]) == (0, 0)
    finally:
        stop(server)
        rec.agent.close()


def test_grpc_latency_quantiles_match_the_clients_timing(pod_factory: Any,
                                                         bpf_ready: None) -> None:
    """100 calls the server answers after 1-40 ms: the kernel's p50/p95/p99 on the
    client's side (request's first segment to the response headers') equal the client's
    own within 25% (the bucket's width) + 1 ms (grpcio's work outside the wire)."""
    a = pod_factory.create("grpc-timer", "traffic")
    b = pod_factory.create("grpc-sleeper", "traffic")
    server = _serve(b)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        results = call(a, b.ip, *[f"sleep:{1 + (i * 37) % 40}" for i in range(100)])
        rec.flush()
        counts, buckets = calls_seen(rec, role="client", cgroup_id=a.cgroup_id)
        assert counts == Counter({0: 100})
        assert latency_disagreements(buckets, results) == []
    finally:
        stop(server)
        rec.agent.close()
