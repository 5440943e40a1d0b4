"""The user's Collector away for a long stretch: the service map keeps running,
memory stays bounded (sums are cumulative: state grows with distinct edges, not
with time away), deferred exports are counted, and when the Collector returns
the totals include everything observed meanwhile: nothing lost."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness.collector import Collector
from harness.procs import ManagedProcess, free_port, wait_for_port
from harness.tools import REPO
from harness.waiting import wait_until
from traceprobe_agent.report_sender import ReportSender
from traceprobe_api.records import ConnectionRecord, Role

CLUSTER = "outage"


def _batch(n_edges: int, per_edge: int) -> list[ConnectionRecord]:
    end = datetime.now(UTC)
    return [ConnectionRecord(node="n1", role=Role.CLIENT, transport="tcp", family="ipv4",
                             remote_ip=f"198.51.100.{i}", remote_port=443, opened=per_edge,
                             k8sNamespace="shop", k8sWorkload="web",
                             k8sWorkloadKind="Deployment",
                             interval_start=end - timedelta(seconds=1), interval_end=end)
            for i in range(n_edges)]


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _total(collector: Collector) -> float:
    points = collector.find("traceprobe.edge.connections", **{"k8s.cluster.name": CLUSTER})
    latest: dict[str, float] = {}
    for p in points:  # cumulative: the largest value per series is its total
        key = json.dumps(p.attributes, sort_keys=True)
        latest[key] = max(latest.get(key, 0.0), p.value or 0.0)
    return sum(latest.values())


def test_collector_away_then_back(tmp_path: Path, _reaped: Any) -> None:
    collector = Collector(tmp_path / "collector")
    collector.start()
    ingest, http = free_port(), free_port()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
           "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
           "PYTHONUNBUFFERED": "1"}
    service_map = ManagedProcess("service-map", [
        sys.executable, "-m", "traceprobe_map", "--no-kubernetes", "--cluster-name", CLUSTER,
        "--ingest-address", f"127.0.0.1:{ingest}", "--http-host", "127.0.0.1",
        "--http-port", str(http), "--bucket-seconds", "1", "--lateness-seconds", "1",
        "--export-interval", "1"], tmp_path / "map.log", env=env, cwd=REPO)
    sender = ReportSender(f"127.0.0.1:{ingest}", "n1")
    sent = 0
    try:
        wait_for_port(http, 30, service_map.popen)
        sender(_batch(20, 1))
        sent += 20
        wait_until(lambda: _total(collector) == sent, timeout=20, what="first export")
        collector.stop()
        rss_early = None
        for second in range(20):  # the long stretch, compressed: 20 export rounds fail
            sender(_batch(20, 3))
            sent += 60
            time.sleep(1)
            if second == 5:
                rss_early = _rss(service_map.pid)
        metrics = _metrics(http)
        assert metrics['traceprobe_map_exports_total{outcome="failed"}'] >= 5
        assert metrics["traceprobe_map_export_deferred_points_total"] > 0
        assert rss_early is not None
        growth = _rss(service_map.pid) - rss_early
        assert growth < 20 * 1024 * 1024, f"map memory grew {growth} bytes while the " \
            "collector was away: state must be bounded by distinct edges"
        assert service_map.alive()
        collector.start(keep_ports=True)
        wait_until(lambda: _total(collector) == sent, timeout=40,
                   what=f"all {sent} connections at the collector after it returns "
                        f"(last {_total(collector)})")
        assert sender.stats.dropped_records == 0
    finally:
        sender.close()
        service_map.stop()
        collector.stop()
