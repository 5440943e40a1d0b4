"""The agent -> service map hop for benchmarks.export_throughput.

Records go through `traceprobe_agent.report_sender.ReportSender` (this process) to
`traceprobe_map.receiver.serve` in a child process (`python -m benchmarks.export_hop`:
the map's ingest server, which decodes and validates every record), real gRPC on
loopback. Floors, run right after: the agent side's protobuf encode alone
(`traceprobe_api.record_otlp.encode` + serialize), and encode + parse + decode in one
process (both sides' Python work without gRPC).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from benchmarks import procs
from benchmarks.report import table
from traceprobe_agent.report_sender import ReportSender
from traceprobe_api.record_otlp import decode, encode
from traceprobe_api.records import ConnectionRecord, Role

REPO = Path(__file__).resolve().parent.parent
NODE = "bench-node"


@dataclass
class Shot:
    wall: float
    cpu: float  # this process (all threads)
    ok: bool
    part: float = 0.0  # a first part of `wall` (export: record())


def synthetic_records(n: int) -> list[ConnectionRecord]:
    """Client-side records as a cluster-mode agent sends them (pod-named local side)."""
    end = datetime.now(UTC)
    start = end - timedelta(seconds=10)
    return [ConnectionRecord(
        node=NODE, role=Role.CLIENT, transport="tcp", family="ipv4", local_ip="10.244.1.7",
        remote_ip=f"10.244.{i // 250 % 250}.{i % 250}", remote_port=8080, pid=1000 + i % 300,
        comm="python3", cgroup_id=7000 + i % 300, cgroup_path=f"/kubepods/pod-{i % 300}/c",
        k8sNamespace=f"team-{i % 20}", k8sPod=f"client-{i % 300}-abc",
        k8sPodUid=f"00000000-0000-0000-0000-{i % 300:012d}", k8sWorkloadKind="Deployment",
        k8sWorkload=f"client-{i % 300}", interval_start=start, interval_end=end,
        opened=5, closed=5, bytes_sent=5000, bytes_received=15000, rtt_sum_us=160,
        rtt_samples=5, rtt_max_us=41, duration_sum_ns=2_103_344) for i in range(n)]


@dataclass
class Hop:
    records: int
    batch: int
    measured: list[Shot] = field(default_factory=list)
    map_cpu: list[float] = field(default_factory=list)
    encode: list[Shot] = field(default_factory=list)
    both: list[Shot] = field(default_factory=list)


def start_receiver() -> tuple[subprocess.Popen[str], int]:
    child = procs.spawn([sys.executable, "-m", "benchmarks.export_hop"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def stop_receiver(child: subprocess.Popen[str]) -> int:
    """Records the map received in all (0 if it cannot say)."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    got = child.stdout.readline().strip()
    procs.stop(child)
    return int(got) if got.isdigit() else 0


def hop_once(hop: Hop, batches: list[list[ConnectionRecord]], port: int, map_pid: int) -> None:
    sender = ReportSender(f"127.0.0.1:{port}", NODE, max_queued_records=10**8)
    try:
        sender(batches[0][:10])  # the channel connects outside the timing
        while sender.stats.sent_records + sender.stats.failed_exports < 10:
            time.sleep(0.01)
        want = sender.stats.sent_records + sum(len(b) for b in batches)
        m0, c0, t0 = procs.cpu_seconds(map_pid), time.process_time(), time.perf_counter()
        for batch in batches:
            sender(batch)
        while sender.stats.sent_records + sender.stats.rejected_records < want:
            if sender.stats.failed_exports:
                break
            time.sleep(0.005)
        ok = sender.stats.sent_records == want and not sender.stats.failed_exports
        hop.measured.append(Shot(time.perf_counter() - t0, time.process_time() - c0, ok))
        hop.map_cpu.append(procs.cpu_seconds(map_pid) - m0)
    finally:
        sender.close()


def hop_floors(hop: Hop, batches: list[list[ConnectionRecord]]) -> None:
    c0, t0 = time.process_time(), time.perf_counter()
    wire = [encode(batch, NODE).SerializeToString() for batch in batches]
    hop.encode.append(Shot(time.perf_counter() - t0, time.process_time() - c0, bool(wire)))
    c0, t0 = time.process_time(), time.perf_counter()
    ok = True
    for batch in batches:
        request = ExportLogsServiceRequest.FromString(encode(batch, NODE).SerializeToString())
        records, errors = decode(request)
        ok = ok and len(records) == len(batch) and not errors
    hop.both.append(Shot(time.perf_counter() - t0, time.process_time() - c0, ok))


def ratio(a: list[Shot], b: list[Shot]) -> str:
    """Median of the per-repeat wall-clock ratios a/b."""
    return f"{median(x.wall / y.wall for x, y in zip(a, b, strict=False)):.1f}"


def per_second(n: int, shots: list[Shot]) -> str:
    x = n / median(s.wall for s in shots)
    return f"{x / 1e3:,.1f}k" if x < 1e5 else f"{x / 1e3:,.0f}k"


def render_hop(hop: Hop) -> str:
    n, m = hop.records, hop.measured
    us = 1e6 / n
    rows = []
    for name, floor in (("encode + serialize (agent side)", hop.encode),
                        ("encode..decode in 1 process", hop.both)):
        rows.append(["ReportSender -> receiver (gRPC)", f"{n:,}", f"{hop.batch:,}",
                     f"{median(s.wall for s in m):.3f}", per_second(n, m),
                     f"{median(s.cpu for s in m) * us:.0f}", f"{median(hop.map_cpu) * us:.0f}",
                     name, per_second(n, floor), f"{median(s.cpu for s in floor) * us:.0f}",
                     ratio(m, floor), f"{sum(s.ok for s in m)}/{len(m)}"])
    header = ["hop", "records", "batch", "total s", "records/s", "agent CPU us/rec",
              "map CPU us/rec", "baseline", "baseline rec/s", "baseline CPU us/rec", "ratio",
              "delivered"]
    return table(header, rows)


def receiver_main() -> int:
    """The map's ingest server: prints its port; on stdin EOF, the records it received."""
    from traceprobe_map.receiver import serve

    server, port, stats = serve(lambda records: 0, "127.0.0.1:0")
    print(port, flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the group: parent stops us
        sys.stdin.read()
    server.stop(1)
    print(stats.records, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(receiver_main())
