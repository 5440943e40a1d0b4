"""OTLP export throughput: the service map's edges out, the agents' records in.

1. The map's exporter (`traceprobe_map.export.EdgeExporter` over `make_exporter`,
   OTLP/gRPC and OTLP/HTTP) sending N synthetic edges in one export to a real
   OpenTelemetry Collector (the test harness's otelcol, default receiver limits,
   debug exporter only): record() + force_flush() timed, edges/s and data points/s.
   Floor in the same run: the very same data points (name, value, attributes taken
   from what EdgeExporter exported) added to bare opentelemetry-sdk counters and
   exported by the same exporter to the same collector: the SDK and the wire
   without EdgeExporter's attribute logic.
2. The agent -> map hop (benchmarks/export_hop.py): ReportSender -> the map's
   receiver over real gRPC, beside the protobuf encode of the same records.

Run from the repository: `.venv/bin/python -m benchmarks.export_throughput [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from types import FrameType
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from benchmarks import procs
from benchmarks.export_hop import (
    Hop,
    Shot,
    hop_floors,
    hop_once,
    per_second,
    ratio,
    render_hop,
    start_receiver,
    stop_receiver,
    synthetic_records,
)
from benchmarks.report import table
from traceprobe_map.buckets import EdgeKey
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.export import EdgeExporter, make_exporter
from traceprobe_map.peers import Peer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from harness.collector import Collector  # noqa: E402

PROTOCOLS = ("grpc", "http/protobuf")
HOUR_MS = 3_600_000  # export interval: only force_flush() exports


def say(msg: str) -> None:
    print(f"[export-bench] {msg}", file=sys.stderr, flush=True)


class QuietCollector(Collector):
    """The harness's otelcol with the debug exporter only: the backend's cost stays out."""

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["exporters"] = {"debug": {"verbosity": "basic"}}
        for pipeline in cfg["service"]["pipelines"].values():
            pipeline["exporters"] = ["debug"]
        return cfg


class Spy(MetricExporter):
    """Times the inner exporter and keeps what it was given (every request: the map's
    exporter sends one export in requests of at most 5,000 points)."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner = inner
        self.batches: list[MetricsData] = []
        self.ok = True
        self.closed = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        if self.closed:  # the provider's shutdown export: not measured, not sent
            return MetricExportResult.SUCCESS
        self.batches.append(metrics_data)
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.ok = self.ok and result is MetricExportResult.SUCCESS
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    @property
    def data(self) -> MetricsData | None:
        return self.batches[-1] if self.batches else None

    def points(self) -> list[tuple[str, int, dict[str, Any]]]:
        assert self.batches
        return [(m.name, int(dp.value), dict(dp.attributes or {}))  # type: ignore[union-attr]
                for data in self.batches for rm in data.resource_metrics
                for sm in rm.scope_metrics for m in sm.metrics for dp in m.data.data_points]


def synthetic_edges(n: int) -> dict[EdgeKey, EdgeStats]:
    """n edges: workload -> workload, Service (two backends) or external address."""
    edges: dict[EdgeKey, EdgeStats] = {}
    for i in range(n):
        ns = f"team-{i % 20}"
        src = Peer("workload", f"client-{i}", ns, "Deployment")
        if i % 4 == 0:
            dst = Peer("service", f"svc-{i % 500}", ns)
        elif i % 4 == 1:
            dst = Peer("external", f"203.0.{i // 250 % 250}.{i % 250}")
        else:
            dst = Peer("workload", f"server-{i % 800}", ns, "StatefulSet")
        s = EdgeStats(connections=1 + i % 50, bytes_sent=1000 + i, bytes_received=5000 + i,
                      retransmits=int(i % 5 == 0), rtt_sum_us=300 * (1 + i % 50),
                      rtt_samples=1 + i % 50, refused=int(i % 10 == 0))
        if dst.kind == "service":
            s.backends = Counter({Peer("workload", f"{dst.name}-v1", ns, "Deployment"): 3,
                                  Peer("workload", f"{dst.name}-v2", ns, "Deployment"): 2})
        edges[EdgeKey(src, dst, 8080 if dst.kind != "external" else 443, "tcp")] = s
    return edges


def series(edges: dict[EdgeKey, EdgeStats]) -> int:
    """Distinct (metric, attributes) series EdgeExporter.record() makes of `edges`: the
    size of its own series store (no cap reached at these sizes)."""
    exporter = EdgeExporter(Spy(make_exporter("http/protobuf", "http://127.0.0.1:9/")),
                            interval_seconds=HOUR_MS / 1000, max_series=10**9)
    exporter.record(edges)
    count = len(exporter.series)
    exporter.exporter.closed = True  # type: ignore[attr-defined]
    exporter.shutdown()
    return count


@dataclass
class ExportCase:
    edges: int
    protocol: str
    series: int = 0
    points: int = 0
    overflow: int = 0  # points carrying otel.metric.overflow=true
    payload: int = 0
    measured: list[Shot] = field(default_factory=list)
    floor: list[Shot] = field(default_factory=list)

    def folded(self) -> int:
        """Series the SDK's cardinality limit folded into overflow points."""
        return self.series - (self.points - self.overflow)


def _endpoint(collector: Collector, protocol: str) -> str:
    if protocol == "grpc":
        return f"127.0.0.1:{collector.grpc_port}"
    return f"{collector.http_endpoint}/v1/metrics"


def export_edges(case: ExportCase, edges: dict[EdgeKey, EdgeStats],
                 collector: Collector) -> list[tuple[str, int, dict[str, Any]]]:
    spy = Spy(make_exporter(case.protocol, _endpoint(collector, case.protocol), insecure=True))
    exporter = EdgeExporter(spy, cluster="bench", interval_seconds=HOUR_MS / 1000)
    c0, t0 = time.process_time(), time.perf_counter()
    exporter.record(edges)
    t1 = time.perf_counter()
    exporter.flush(timeout_millis=60_000)
    case.measured.append(Shot(time.perf_counter() - t0, time.process_time() - c0,
                              spy.ok and spy.data is not None, part=t1 - t0))
    spy.closed = True
    exporter.shutdown()
    points = spy.points()
    if not case.points and spy.data is not None:
        case.points = len(points)
        case.payload = sum(encode_metrics(data).ByteSize() for data in spy.batches)
        case.overflow = sum(1 for p in points if p[2].get("otel.metric.overflow"))
    return points


def export_floor(case: ExportCase, points: list[tuple[str, int, dict[str, Any]]],
                 collector: Collector) -> None:
    spy = Spy(make_exporter(case.protocol, _endpoint(collector, case.protocol), insecure=True))
    reader = PeriodicExportingMetricReader(spy, export_interval_millis=HOUR_MS)
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("bench.floor")
    counters = {name: meter.create_counter(name) for name in {p[0] for p in points}}
    c0, t0 = time.process_time(), time.perf_counter()
    for name, value, attrs in points:
        counters[name].add(value, attrs)
    provider.force_flush(60_000)
    case.floor.append(Shot(time.perf_counter() - t0, time.process_time() - c0,
                           spy.ok and spy.data is not None))
    spy.closed = True
    provider.shutdown()


def render(cases: list[ExportCase]) -> str:
    rows = []
    for c in cases:
        folded = f" ({c.folded():,} folded)" if c.folded() else ""
        rows.append([
            f"EdgeExporter {c.protocol}", f"{c.edges:,}", f"{c.series:,}",
            f"{c.points:,}{folded}", f"{c.payload / 1e6:.1f}",
            f"{median(s.part for s in c.measured):.3f}",
            f"{median(s.wall for s in c.measured):.3f}",
            per_second(c.edges, c.measured), per_second(c.points, c.measured),
            per_second(c.points, c.floor), ratio(c.measured, c.floor),
            f"{sum(s.ok for s in c.measured)}/{len(c.measured)}, "
            f"{sum(s.ok for s in c.floor)}/{len(c.floor)}"])
    header = ["exporter", "edges", "series", "points sent", "MB", "record() s", "total s",
              "edges/s", "points/s", "SDK floor points/s", "ratio", "delivered (floor)"]
    return table(header, rows)


LEGEND = """
  Medians over the repeats (each measured export followed by its baseline). series: the
  distinct (metric, attributes) series EdgeExporter.record() makes of the edges; points
  sent: data points in the export's requests, at most 5,000 each ("folded": series a
  cardinality limit merged into otel.metric.overflow=true points). MB: the OTLP requests'
  protobuf size. total s: record() + flush() until the collector answered every request
  (a failed export's time includes the exporter's retries). SDK floor: the same points
  on bare SDK counters, same exporter and collector. ratio: median of per-repeat wall /
  floor wall (above 1: slower than the floor). delivered: exports accepted / repeats.
  Hop: first record queued until the map acknowledged the last; CPU per record in the
  agent (this process: encode + gRPC) and the map (child process: decode + validate);
  ratio: hop wall / baseline wall per repeat."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.export_throughput",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", default="1000,10000", help="edges per export (1000,10000)")
    p.add_argument("--records", type=int, default=20_000, help="records through the hop")
    p.add_argument("--batch", type=int, default=2000, help="records per agent report (2000)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="1000 edges, 6000 records, 2 repeats")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in (("edges", "1000"), ("records", 6000), ("repeats", 2)):
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="traceprobe-bench-export-"))
    collector = QuietCollector(work / "collector")
    child: subprocess.Popen[str] | None = None
    cases = [ExportCase(int(n), proto) for n in args.edges.split(",") for proto in PROTOCOLS]
    records = synthetic_records(args.records)
    batches = [records[i:i + args.batch] for i in range(0, len(records), args.batch)]
    hop = Hop(len(records), args.batch)
    try:
        collector.start()
        child, port = start_receiver()
        edge_sets = {c.edges: synthetic_edges(c.edges) for c in cases}
        for case in cases:
            case.series = series(edge_sets[case.edges])
        for r in range(args.repeats):
            for case in cases:
                points = export_edges(case, edge_sets[case.edges], collector)
                export_floor(case, points, collector)
            hop_once(hop, batches, port, child.pid)
            hop_floors(hop, batches)
            say(f"repeat {r + 1}/{args.repeats}: " + ", ".join(
                f"{c.protocol} {c.edges} {c.measured[-1].wall:.2f}s" for c in cases)
                + f", hop {hop.measured[-1].wall:.2f}s")
        received, child = stop_receiver(child), None
    except KeyboardInterrupt:
        print("\ninterrupted: collector and receiver stopped", file=sys.stderr)
        return 130
    finally:
        if child is not None:
            procs.stop(child)
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nOTLP export throughput: {os.cpu_count()} CPUs; "
          f"edges per export {args.edges}; hop: {len(records):,} records in batches of "
          f"{args.batch:,}; the map received {received:,} records in all\n")
    print(render(cases))
    print()
    print(render_hop(hop))
    print(LEGEND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
