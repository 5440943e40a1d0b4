"""The agent's own health and metrics over HTTP (/healthz, /metrics in Prometheus
text format): drops, map fill, records, CPU and memory. Read at scrape time from
the agent's stats (a collector, not a second set of counters to keep)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from traceprobe_agent.agent import Agent

Family = CounterMetricFamily | GaugeMetricFamily


def _family(family: Family, samples: Mapping[str, float]) -> Family:
    for label, value in sorted(samples.items()):
        family.add_metric([label], value)
    return family


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[Metric]:
        # Counter names keep their `_total`: prometheus_client strips and re-adds it.
        s = self._agent.stats
        yield CounterMetricFamily("traceprobe_agent_records_total",
                                  "Connection records produced", value=s.records)
        yield _family(CounterMetricFamily(
            "traceprobe_agent_connections_total", "Connection events counted, by event",
            labels=["event"]), s.connections)
        yield CounterMetricFamily("traceprobe_agent_drains_total",
                                  "Drains of the kernel maps", value=s.drains)
        yield GaugeMetricFamily("traceprobe_agent_drain_seconds",
                                "Time the last drain took", value=s.last_drain_seconds)
        yield GaugeMetricFamily("traceprobe_agent_compile_seconds",
                                "Time the last program compile took",
                                value=s.last_compile_seconds)
        yield _family(CounterMetricFamily(
            "traceprobe_agent_kernel_drops_total", "Kernel-side counters, by cause",
            labels=["cause"]), s.kernel_counters)
        yield _family(GaugeMetricFamily(
            "traceprobe_agent_map_entries", "Entries in use per BPF map", labels=["map"]),
            {m: used for m, (used, _cap) in s.map_usage.items()})
        yield _family(GaugeMetricFamily(
            "traceprobe_agent_map_capacity", "Maximum entries per BPF map", labels=["map"]),
            {m: cap for m, (_used, cap) in s.map_usage.items()})
        if self._agent.nat is not None:
            yield CounterMetricFamily("traceprobe_agent_nat_lost_events_total",
                                      "Conntrack events lost", value=self._agent.nat.lost_events)
        if s.report is not None:
            r = s.report
            records = CounterMetricFamily("traceprobe_agent_report_records_total",
                                          "Records reported to the service map, by outcome",
                                          labels=["outcome"])
            for outcome, n in (("sent", r.sent_records), ("dropped", r.dropped_records),
                               ("rejected", r.rejected_records)):
                records.add_metric([outcome], n)
            yield records
            yield GaugeMetricFamily("traceprobe_agent_report_queued_records",
                                    "Records waiting to be sent", value=r.queued_records)
            yield CounterMetricFamily("traceprobe_agent_report_failed_exports_total",
                                      "Failed exports to the service map",
                                      value=r.failed_exports)
        yield CounterMetricFamily("process_cpu_seconds_total", "User and system CPU time",
                                  value=s.cpu_seconds())
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory",
                                value=s.rss_bytes())
        yield GaugeMetricFamily("process_resident_memory_peak_bytes", "Peak resident memory",
                                value=s.peak_rss_bytes())


def serve(agent: Agent, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start serving in a daemon thread; port 0 picks a free one (server.server_port)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                ok = agent.plan is not None and agent.plan.runnable
                body, code = ("ok\n" if ok else f"not ready: {agent.stats.problem}\n"), (
                    200 if ok else 503)
            elif self.path == "/metrics":
                agent.sample_map_usage()
                body, code = generate_latest(registry).decode(), 200
            else:
                body, code = "not found\n", 404
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes are not news

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
    return server
