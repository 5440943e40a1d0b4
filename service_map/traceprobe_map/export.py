"""Edges out via OTLP (opentelemetry-sdk), in the user's own backend's terms.

Attribute names follow OTel semantic conventions and the `k8s.src.*` /
`k8s.dst.*` family of Beyla/OBI flow metrics; an optional Grafana service-graph
set (`traces_service_graph_request_*`) lets the map show up in Grafana as is.

Directions are the client's, as for bytes: `traceprobe.edge.bytes` and
`traceprobe.edge.retransmits` carry `network.io.direction` = `transmit` for
client → server (bytes the client sent, packets the client retransmitted) and
`receive` for server → client (packets the server retransmitted). RTT is
measured by each side for itself: `traceprobe.edge.rtt.sum` / `.rtt.count` carry
`traceprobe.rtt.observer` = `client` or `server`, the side whose kernel took the
samples. A side no agent observed exports nothing for it (never a zero): an edge
from outside the cluster has only `receive` retransmits and `server` RTT.
Endpoint, protocol, headers and TLS come from the standard `OTEL_EXPORTER_OTLP_*`
variables unless given: argument > signal-specific env > generic env > default,
which is the SDK's own order.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import Counter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource

from traceprobe_api.records import MAX_COUNT
from traceprobe_map.buckets import EdgeKey
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.peers import Peer

RTT_OBSERVER = "traceprobe.rtt.observer"
"""Which side's kernel measured an RTT point: client or server."""


def _session_keeping_its_ca() -> Any:
    """A requests Session whose CA (OTEL_EXPORTER_OTLP_CERTIFICATE, set on it by the
    exporter) is not replaced by REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE from the
    environment, as plain requests does for session-level `verify`: the OTLP
    variable names the backend's CA and must win. Proxies still come from env."""
    import requests

    class Session(requests.Session):
        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any,
                                       verify: Any, cert: Any) -> Any:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if verify is None:
                settings["verify"] = self.verify
            return settings

    return Session()


def make_exporter(protocol: str = "grpc", endpoint: str | None = None,
                  insecure: bool | None = None) -> MetricExporter:
    """An OTLP metric exporter; None arguments defer to the OTEL_* environment."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        # Collectors refuse gRPC messages over 4 MiB by default: ~5k points is ~2 MB.
        return OTLPMetricExporter(endpoint=endpoint, insecure=insecure,
                                  max_export_batch_size=5000)
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpExporter,
        )

        return HttpExporter(endpoint=endpoint, session=_session_keeping_its_ca())
    raise ValueError(f"OTLP protocol {protocol!r} not supported: use grpc or http/protobuf")


class CountingExporter(MetricExporter):
    """Counts export outcomes, so an unreachable backend shows up as a number.

    Sums are cumulative: an export that fails loses nothing, the next one that
    succeeds carries the totals, and memory stays bounded by the number of
    distinct edges however long the backend is away. `failed_points` counts
    data points whose delivery was deferred that way.
    """

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner = inner
        self.exports = 0
        self.failed_exports = 0
        self.failed_points = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.exports += 1
        if result is not MetricExportResult.SUCCESS:
            self.failed_exports += 1
            self.failed_points += sum(len(m.data.data_points)
                                      for rm in metrics_data.resource_metrics
                                      for sm in rm.scope_metrics for m in sm.metrics)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def _side(prefix: str, peer: Peer) -> dict[str, str]:
    attrs = {f"{prefix}.name": peer.name, f"{prefix}.kind": peer.kind}
    if peer.namespace:
        attrs[f"{prefix}.namespace"] = peer.namespace
    if peer.workload_kind:
        attrs[f"{prefix}.owner.type"] = peer.workload_kind
    return attrs


def edge_attributes(key: EdgeKey, cluster: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {"k8s.cluster.name": cluster, "network.transport": key.transport,
                             **_side("k8s.src", key.src), **_side("k8s.dst", key.dst)}
    if key.port is not None:
        attrs["server.port"] = key.port
    return attrs


def _add(counter: Counter, n: int, attrs: dict[str, Any]) -> None:
    # Saturating: a bucket's sum of valid records can exceed what OTLP's int64 holds,
    # and one out-of-range point would fail every later export of the whole batch.
    if n:
        counter.add(min(n, MAX_COUNT), attrs)


class EdgeExporter:
    """Counts each merged window onto cumulative OTLP sums, exported periodically."""

    def __init__(self, exporter: MetricExporter, cluster: str = "cluster",
                 interval_seconds: float = 10.0, service_graph: bool = False,
                 max_series: int = 200_000) -> None:
        self.exporter = exporter
        self.cluster = cluster
        self.service_graph = service_graph
        self._reader = PeriodicExportingMetricReader(
            exporter, export_interval_millis=interval_seconds * 1000)
        # The SDK folds series beyond 2,000 per metric into one overflow point; the
        # map caps edges itself (--max-edges), so the SDK's cap must sit above that.
        self._provider = MeterProvider(
            metric_readers=[self._reader], resource=Resource.create(
                {"service.name": "traceprobe-service-map", "k8s.cluster.name": cluster}),
            views=[View(instrument_name="*", aggregation_cardinality_limit=max_series)])
        meter = self._provider.get_meter("traceprobe.service_map")
        self._connections = meter.create_counter(
            "traceprobe.edge.connections", "{connection}", "Connections established")
        self._failures = meter.create_counter(
            "traceprobe.edge.failures", "{connection}", "Failed connections, by failure.kind")
        self._bytes = meter.create_counter(
            "traceprobe.edge.bytes", "By", "Bytes, by network.io.direction from the client")
        self._retransmits = meter.create_counter(
            "traceprobe.edge.retransmits", "{packet}",
            "Retransmitted packets, by network.io.direction from the client")
        self._rtt_sum = meter.create_counter(
            "traceprobe.edge.rtt.sum", "us",
            "Sum of smoothed-RTT samples, by the side that measured them"
            " (traceprobe.rtt.observer)")
        self._rtt_count = meter.create_counter(
            "traceprobe.edge.rtt.count", "{sample}",
            "Smoothed-RTT samples, by traceprobe.rtt.observer")
        self._backend_attempts = meter.create_counter(
            "traceprobe.edge.backend.attempts", "{attempt}",
            "Attempts to a Service, by the backend kube-proxy sent them to (k8s.dst.backend.*)")
        self._sg_total = meter.create_counter("traces_service_graph_request_total")
        self._sg_failed = meter.create_counter("traces_service_graph_request_failed_total")

    def record(self, edges: dict[EdgeKey, EdgeStats]) -> None:
        # Zero increments are skipped: they would create series that never count.
        for key, s in edges.items():
            attrs = edge_attributes(key, self.cluster)
            _add(self._connections, s.connections, attrs)
            for kind, n in (("refused", s.refused), ("timeout", s.timeouts),
                            ("reset", s.resets)):
                _add(self._failures, n, {**attrs, "failure.kind": kind})
            _add(self._bytes, s.bytes_sent, {**attrs, "network.io.direction": "transmit"})
            _add(self._bytes, s.bytes_received, {**attrs, "network.io.direction": "receive"})
            _add(self._retransmits, s.retransmits, {**attrs, "network.io.direction": "transmit"})
            _add(self._retransmits, s.server_retransmits,
                 {**attrs, "network.io.direction": "receive"})
            for backend, n in s.backends.items():
                _add(self._backend_attempts, n,
                     {**attrs, **_side("k8s.dst.backend", backend)})
            for observer, samples, sum_us in (
                    ("client", s.rtt_samples, s.rtt_sum_us),
                    ("server", s.server_rtt_samples, s.server_rtt_sum_us)):
                if samples:
                    measured = {**attrs, RTT_OBSERVER: observer}
                    _add(self._rtt_sum, sum_us, measured)
                    _add(self._rtt_count, samples, measured)
            if self.service_graph:
                sg = {"client": key.src.name, "server": key.dst.name,
                      "client_service_namespace": key.src.namespace or "",
                      "server_service_namespace": key.dst.namespace or "",
                      "connection_type": "" if key.dst.kind == "workload" else key.dst.kind}
                _add(self._sg_total, s.attempts, sg)
                _add(self._sg_failed, s.failures, sg)

    def flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._provider.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self._provider.shutdown()
