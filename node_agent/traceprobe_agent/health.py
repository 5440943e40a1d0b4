"""The agent's own health and metrics over HTTP: /livez, /readyz (= /healthz) and
/metrics in Prometheus text format (drops, map fill, records, CPU and memory, read
at scrape time from the agent's stats: a collector, not a second set of counters).

On the node's loopback everything is plain HTTP, as any process on the node could
read the kernel's view anyway. Beyond loopback (`--metrics-address`), /metrics is
served over HTTPS and only to a bearer token the API server accepts and allows
`get` on /metrics (traceprobe_agent.metrics_auth); /livez and /readyz stay open,
saying no more than ok or not. The kubelet probes a separate plain loopback
listener (`--health-port`, probes only) with an exec probe (see the operator's
agent_workload.health_check for why).
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from traceprobe_agent.agent import Agent
from traceprobe_agent.metrics_auth import MetricsAuth, is_loopback
from traceprobe_api.http_server import CLIENT_TIMEOUT_SECONDS, BoundedHTTPServer

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
        yield _family(CounterMetricFamily(
            "traceprobe_agent_errors", "Failures the agent survived, by what failed",
            labels=["what"]), {"interval": s.tick_errors, "record": s.invalid_records})
        yield GaugeMetricFamily("traceprobe_agent_drain_seconds",
                                "Time the last drain took", value=s.last_drain_seconds)
        if s.core:
            yield _family(GaugeMetricFamily(
                "traceprobe_agent_connection_core", "The connection core loaded (1)",
                labels=["core"]), {s.core: 1})
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
        if self._agent.selection is not None:
            sel = self._agent.selection
            yield _family(CounterMetricFamily(
                "traceprobe_agent_unselected_records_total",
                "Records not reported: no probe selects their process (skipped), or its pod"
                " was never heard of (undecided)", labels=["reason"]),
                {"skipped": sel.skipped_records, "undecided": sel.undecided_records})
        if self._agent.nat is not None:
            yield CounterMetricFamily("traceprobe_agent_nat_lost_events_total",
                                      "Conntrack events lost", value=self._agent.nat.lost_events)
            yield CounterMetricFamily(
                "traceprobe_agent_nat_unclaimed_flows_total",
                "DNAT flows no record counted as an attempt (dropped after two drains)",
                value=self._agent.nat.unclaimed_flows)
            yield CounterMetricFamily(
                "traceprobe_agent_nat_unselected_flows",
                "DNAT flows of clients no probe observes (not kept)",
                value=self._agent.nat.unselected_flows)
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


log = logging.getLogger("traceprobe.agent")

#: Seconds the agent's loop may stand still (plus a few intervals) before /livez
#: fails: a BCC compile holds it, for seconds on a busy node.
STALL_SECONDS = 120.0


def url(scheme: str, address: str, port: int, path: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}{path}"


class Health:
    """What the kubelet asks. Live: the agent's loop went round within `stall_seconds`
    (a BCC compile holds it for seconds, so the allowance is generous). Ready: the
    programs the probes ask for run here (and loaded without error)."""

    def __init__(self, agent: Agent, stall_seconds: float = math.inf,
                 load_error: Callable[[], str | None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.stall_seconds = stall_seconds
        self.load_error = load_error
        self.clock = clock
        self._last_beat = clock()

    def beat(self) -> None:
        self._last_beat = self.clock()

    def live(self) -> tuple[bool, str]:
        quiet = self.clock() - self._last_beat
        if quiet > self.stall_seconds:
            return False, f"the agent's loop has not run for {quiet:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        plan = self.agent.plan
        if plan is None:
            return False, "no probe applies to this node yet"
        if not plan.runnable:
            return False, str(self.agent.stats.problem)
        error = self.load_error()
        if error:
            return False, error
        return True, "ok"


def _handler(routes: dict[str, Callable[[BaseHTTPRequestHandler], tuple[int, str]]],
             ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT_SECONDS

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            code, body = route(self) if route else (404, "not found\n")
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
            self.send_header("Content-Length", str(len(data)))
            if code == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="traceprobe-agent"')
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes are not news

    return Handler


def _probe(check: Callable[[], tuple[bool, str]], detail: bool,
           ) -> Callable[[BaseHTTPRequestHandler], tuple[int, str]]:
    def answer(_: BaseHTTPRequestHandler) -> tuple[int, str]:
        ok, why = check()
        if ok:
            return 200, "ok\n"
        return 503, f"not ready: {why}\n" if detail else "not ready\n"
    return answer


def _start(server: ThreadingHTTPServer, name: str) -> ThreadingHTTPServer:
    threading.Thread(target=server.serve_forever, daemon=True, name=name).start()
    return server


def health_routes(health: Health, detail: bool = True,
                  ) -> dict[str, Callable[[BaseHTTPRequestHandler], tuple[int, str]]]:
    ready = _probe(health.ready, detail)
    return {"/livez": _probe(health.live, detail), "/readyz": ready, "/healthz": ready}


def serve(agent: Agent, port: int, host: str = "127.0.0.1", *, health: Health | None = None,
          auth: MetricsAuth | None = None, tls: ssl.SSLContext | None = None,
          ) -> ThreadingHTTPServer:
    """Serve /metrics and the probes in a daemon thread; port 0 picks a free one
    (server.server_port). Beyond loopback both `auth` and `tls` are required."""
    if not is_loopback(host) and (auth is None or tls is None):
        raise ValueError(f"/metrics on {host} (beyond loopback) needs TLS and token reviews")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))

    def metrics(request: BaseHTTPRequestHandler) -> tuple[int, str]:
        if auth is not None:
            decision = auth.check(request.headers.get("Authorization"))
            if decision.status != 200:
                return decision.status, decision.reason + "\n"
        agent.sample_map_usage()
        return 200, generate_latest(registry).decode()

    routes = {**health_routes(health or Health(agent), detail=auth is None),
              "/metrics": metrics}
    return _start(BoundedHTTPServer((host, port), _handler(routes), tls), "metrics")


def serve_health(health: Health, port: int) -> ThreadingHTTPServer:
    """The probes alone, plain HTTP on the node's 127.0.0.1 (the kubelet's exec probes)."""
    server = BoundedHTTPServer(("127.0.0.1", port), _handler(health_routes(health)))
    return _start(server, "health")
