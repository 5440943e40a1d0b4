"""The agent's own health and metrics over HTTP (/healthz, /metrics in Prometheus
text format): drops, map fill, records, CPU and memory."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from traceprobe_agent.agent import Agent


def render_metrics(agent: Agent) -> str:
    s = agent.stats
    lines = [
        "# TYPE traceprobe_agent_records_total counter",
        f"traceprobe_agent_records_total {s.records}",
        "# TYPE traceprobe_agent_connections_total counter",
        *(f'traceprobe_agent_connections_total{{event="{k}"}} {v}'
          for k, v in sorted(s.connections.items())),
        "# TYPE traceprobe_agent_drains_total counter",
        f"traceprobe_agent_drains_total {s.drains}",
        "# TYPE traceprobe_agent_drain_seconds gauge",
        f"traceprobe_agent_drain_seconds {s.last_drain_seconds:.6f}",
        "# TYPE traceprobe_agent_compile_seconds gauge",
        f"traceprobe_agent_compile_seconds {s.last_compile_seconds:.6f}",
        "# TYPE traceprobe_agent_kernel_drops_total counter",
    ]
    lines += [f'traceprobe_agent_kernel_drops_total{{cause="{k}"}} {v}'
              for k, v in sorted(s.kernel_counters.items())]
    lines.append("# TYPE traceprobe_agent_map_entries gauge")
    lines += [f'traceprobe_agent_map_entries{{map="{m}"}} {used}'
              for m, (used, _cap) in sorted(s.map_usage.items())]
    lines.append("# TYPE traceprobe_agent_map_capacity gauge")
    lines += [f'traceprobe_agent_map_capacity{{map="{m}"}} {cap}'
              for m, (_used, cap) in sorted(s.map_usage.items())]
    if agent.nat is not None:
        lines += ["# TYPE traceprobe_agent_nat_lost_events_total counter",
                  f"traceprobe_agent_nat_lost_events_total {agent.nat.lost_events}"]
    if s.report is not None:
        lines.append("# TYPE traceprobe_agent_report_records_total counter")
        lines += [f'traceprobe_agent_report_records_total{{outcome="{k}"}} {v}'
                  for k, v in (("sent", s.report.sent_records),
                               ("dropped", s.report.dropped_records),
                               ("rejected", s.report.rejected_records))]
        lines += ["# TYPE traceprobe_agent_report_queued_records gauge",
                  f"traceprobe_agent_report_queued_records {s.report.queued_records}",
                  "# TYPE traceprobe_agent_report_failed_exports_total counter",
                  f"traceprobe_agent_report_failed_exports_total {s.report.failed_exports}"]
    lines += [
        "# TYPE process_cpu_seconds_total counter",
        f"process_cpu_seconds_total {s.cpu_seconds():.3f}",
        "# TYPE process_resident_memory_bytes gauge",
        f"process_resident_memory_bytes {s.rss_bytes()}",
        "# TYPE process_resident_memory_peak_bytes gauge",
        f"process_resident_memory_peak_bytes {s.peak_rss_bytes()}",
    ]
    return "\n".join(lines) + "\n"


def serve(agent: Agent, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start serving in a daemon thread; port 0 picks a free one (server.server_port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                ok = agent.plan is not None and agent.plan.runnable
                body, code = ("ok\n" if ok else f"not ready: {agent.stats.problem}\n"), (
                    200 if ok else 503)
            elif self.path == "/metrics":
                agent.sample_map_usage()
                body, code = render_metrics(agent), 200
            else:
                body, code = "not found\n", 404
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes are not news

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
    return server
