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

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from traceprobe_map.buckets import EdgeKey
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.peers import Peer
from traceprobe_map.request_export import SG_FAILED, SG_TOTAL, graph_requests, record_requests
from traceprobe_map.series import Instrument, SeriesStore

log = logging.getLogger("traceprobe.map.export")

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


_CONNECTIONS = Instrument("traceprobe.edge.connections", "{connection}",
                          "Connections established")
_FAILURES = Instrument("traceprobe.edge.failures", "{connection}",
                       "Failed connections, by failure.kind")
_BYTES = Instrument("traceprobe.edge.bytes", "By",
                    "Bytes, by network.io.direction from the client")
_DATAGRAMS = Instrument("traceprobe.edge.datagrams", "{datagram}",
                        "UDP datagrams, by network.io.direction from the client")
_RETRANSMITS = Instrument("traceprobe.edge.retransmits", "{packet}",
                          "Retransmitted packets, by network.io.direction from the client")
_RTT_SUM = Instrument("traceprobe.edge.rtt.sum", "us",
                      "Sum of smoothed-RTT samples, by the side that measured them"
                      " (traceprobe.rtt.observer)")
_RTT_COUNT = Instrument("traceprobe.edge.rtt.count", "{sample}",
                        "Smoothed-RTT samples, by traceprobe.rtt.observer")
_BACKEND_ATTEMPTS = Instrument(
    "traceprobe.edge.backend.attempts", "{attempt}",
    "Attempts to a Service, by the backend kube-proxy sent them to (k8s.dst.backend.*)")
SCOPE = InstrumentationScope("traceprobe.service_map")
POINTS_PER_REQUEST = 5000
"""~2 MB of OTLP: Collectors refuse gRPC messages over 4 MiB and HTTP bodies over 20 MiB
by default, and 10,000 edges are ~58,000 points."""


def _batches(metrics: list[Metric], size: int) -> Iterator[list[Metric]]:
    """The metrics in requests of at most `size` points (a metric split across them)."""
    batch: list[Metric] = []
    room = size
    for metric in metrics:
        points = list(metric.data.data_points)
        while points:
            part, points = points[:room], points[room:]
            data = Histogram(data_points=part,  # type: ignore[arg-type]
                             aggregation_temporality=AggregationTemporality.CUMULATIVE) \
                if isinstance(metric.data, Histogram) else Sum(
                    data_points=part, is_monotonic=True,  # type: ignore[arg-type]
                    aggregation_temporality=AggregationTemporality.CUMULATIVE)
            batch.append(Metric(name=metric.name, description=metric.description,
                                unit=metric.unit, data=data))
            room -= len(part)
            if not room:
                yield batch
                batch, room = [], size
    if batch:
        yield batch


class EdgeExporter:
    """Counts each merged bucket onto cumulative OTLP sums, exported periodically.

    The sums are the map's own (series.SeriesStore), not SDK counters: a series lives
    while its edge is counted and is dropped `keep_seconds` (the map's window) after
    its edge was last seen, so what is exported and held stays bounded by the edges of
    one window, however long the map runs."""

    def __init__(self, exporter: MetricExporter, cluster: str = "cluster",
                 interval_seconds: float = 10.0, service_graph: bool = False,
                 max_series: int = 200_000, keep_seconds: float = 300.0,
                 instance_id: str | None = None) -> None:
        self.exporter = exporter
        self.cluster = cluster
        self.service_graph = service_graph
        self.interval_seconds = interval_seconds
        # service.instance.id tells a restarted map (or a second one) from this one.
        # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES (read by Resource.create) name the
        # service when set; the SDK's unknown_service placeholder gives way to ours.
        resource = Resource.create({"k8s.cluster.name": cluster,
                                    "service.instance.id": instance_id or str(uuid.uuid4())})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "traceprobe-service-map"}))
        self.resource = resource
        self.series = SeriesStore(keep_seconds, max_series)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="otlp-export")
        self._thread.start()

    def record(self, edges: dict[EdgeKey, EdgeStats]) -> None:
        now, now_ns = time.time(), time.time_ns()
        with self._lock:
            self._record(edges, now, now_ns)

    def _record(self, edges: dict[EdgeKey, EdgeStats], now: float, now_ns: int) -> None:
        def add(instrument: Instrument, n: int, attrs: dict[str, Any]) -> None:
            # Zero increments are skipped: they would create series that never count.
            if n:
                self.series.add(instrument, n, attrs, now, now_ns)

        for key, s in edges.items():
            attrs = edge_attributes(key, self.cluster)
            add(_CONNECTIONS, s.connections, attrs)
            for kind, n in (("refused", s.refused), ("timeout", s.timeouts),
                            ("reset", s.resets)):
                add(_FAILURES, n, {**attrs, "failure.kind": kind})
            add(_BYTES, s.bytes_sent, {**attrs, "network.io.direction": "transmit"})
            add(_BYTES, s.bytes_received, {**attrs, "network.io.direction": "receive"})
            add(_DATAGRAMS, s.datagrams_sent, {**attrs, "network.io.direction": "transmit"})
            add(_DATAGRAMS, s.datagrams_received,
                {**attrs, "network.io.direction": "receive"})
            add(_RETRANSMITS, s.retransmits, {**attrs, "network.io.direction": "transmit"})
            add(_RETRANSMITS, s.server_retransmits, {**attrs, "network.io.direction": "receive"})
            for backend, n in s.backends.items():
                add(_BACKEND_ATTEMPTS, n, {**attrs, **_side("k8s.dst.backend", backend)})
            for observer, samples, sum_us in (
                    ("client", s.rtt_samples, s.rtt_sum_us),
                    ("server", s.server_rtt_samples, s.server_rtt_sum_us)):
                if samples:
                    measured = {**attrs, RTT_OBSERVER: observer}
                    add(_RTT_SUM, sum_us, measured)
                    add(_RTT_COUNT, samples, measured)
            if s.requests:
                record_requests(self.series, key, s.requests, attrs, now, now_ns)
            if self.service_graph:
                sg = {"client": key.src.name, "server": key.dst.name,
                      "client_service_namespace": key.src.namespace or "",
                      "server_service_namespace": key.dst.namespace or "",
                      "connection_type": "" if key.dst.kind == "workload" else key.dst.kind}
                if s.requests and s.requests.counts:  # requests, where there are any
                    graph_requests(self.series, s.requests, sg, now, now_ns)
                else:
                    add(SG_TOTAL, s.attempts, sg)
                    add(SG_FAILED, s.failures, sg)

    def _export(self, timeout_millis: float = 10_000) -> bool:
        with self._lock:
            self.series.prune(time.time())
            metrics = list(self.series.metrics(time.time_ns()))
        ok = True
        for batch in _batches(metrics, POINTS_PER_REQUEST):
            data = MetricsData(resource_metrics=[ResourceMetrics(
                resource=self.resource, schema_url="",
                scope_metrics=[ScopeMetrics(scope=SCOPE, metrics=batch, schema_url="")])])
            try:
                result = self.exporter.export(data, timeout_millis=timeout_millis)
            except Exception as exc:  # an exporter bug must not end the export thread
                log.warning("OTLP export failed: %s", exc)
                result = MetricExportResult.FAILURE
            ok = ok and result is MetricExportResult.SUCCESS
        return ok

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self._export()

    def flush(self, timeout_millis: float = 10_000) -> bool:
        """Export now; True when the backend took it."""
        return self._export(timeout_millis)

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._export()
        self.exporter.shutdown()
