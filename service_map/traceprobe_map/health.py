"""The service map's own numbers for Prometheus: what came in, what was dropped or
refused and why, how merging and exporting are doing. Read at scrape time from the
components' own counters (a collector, not a second set of counters to keep)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from opentelemetry.sdk.metrics.export import MetricExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from traceprobe_map.export import CountingExporter
from traceprobe_map.ingest_auth import Cause, IngestAuth
from traceprobe_map.metadata import MetadataCache
from traceprobe_map.receiver import ReceiverStats
from traceprobe_map.window import MapWindow


def _family(family: CounterMetricFamily | GaugeMetricFamily,
            samples: dict[str, float]) -> CounterMetricFamily | GaugeMetricFamily:
    for label, value in samples.items():
        family.add_metric([label] if label else [], value)
    return family


class MapCollector(Collector):
    def __init__(self, window: MapWindow, cache: MetadataCache, ingest: ReceiverStats,
                 exporter: MetricExporter | None, auth: IngestAuth | None = None) -> None:
        self._window, self._cache, self._ingest, self._exporter = window, cache, ingest, exporter
        self._auth = auth

    def collect(self) -> Iterator[Metric]:
        w, ingest = self._window.stats, self._ingest
        yield _family(CounterMetricFamily(
            "traceprobe_map_records", "Records from agents, by what became of them",
            labels=["outcome"]), {
            "accepted": w.records, "late": w.late_records, "dropped": w.dropped_records,
            "rejected": ingest.rejected_records, "udp_not_drawn": w.udp_records,
            "loopback_not_drawn": w.loopback_records})
        yield CounterMetricFamily(
            "traceprobe_map_reused_address_records",
            "Records whose remote address changed owner while their connections opened",
            value=w.reused_address_records)
        yield CounterMetricFamily("traceprobe_map_ingest_requests",
                                  "OTLP export requests received", value=ingest.requests)
        if self._auth is not None:
            refused = self._auth.refused
            yield _family(CounterMetricFamily(
                "traceprobe_map_ingest_refused_requests",
                "Export requests refused before reading, by why (the sender's token)",
                labels=["cause"]), {c.value: refused[c] for c in Cause})
            yield CounterMetricFamily("traceprobe_map_ingest_token_reviews",
                                      "TokenReviews made (others answered from the cache)",
                                      value=self._auth.reviews)
            yield CounterMetricFamily(
                "traceprobe_map_reattributed_records",
                "Records naming another node than their sender's token (given the token's)",
                value=ingest.reattributed_records)
        yield _family(CounterMetricFamily(
            "traceprobe_map_overflow", "Edges and external peers folded by the caps",
            labels=["what"]), {"edges": w.overflowed_edges,
                               "externals": self._window.resolver.overflowed})
        yield CounterMetricFamily("traceprobe_map_buckets_merged", "Buckets merged",
                                  value=w.buckets_merged)
        contents = self._window.contents()
        yield GaugeMetricFamily("traceprobe_map_open_buckets", "Buckets still taking records",
                                value=len(contents.open))
        yield GaugeMetricFamily("traceprobe_map_pending_records",
                                "Records folded into open buckets (capped)",
                                value=contents.pending_records)
        yield GaugeMetricFamily("traceprobe_map_last_merge_seconds",
                                "Time the last bucket's merge took", value=w.last_merge_seconds)
        yield _family(GaugeMetricFamily("traceprobe_map_objects",
                                        "Kubernetes objects held for naming", labels=["kind"]),
                      dict(self._cache.sizes()))
        exporter = self._exporter
        if isinstance(exporter, CountingExporter):
            yield _family(CounterMetricFamily(
                "traceprobe_map_exports", "OTLP exports to the backend", labels=["outcome"]),
                {"ok": exporter.exports - exporter.failed_exports,
                 "failed": exporter.failed_exports})
            yield CounterMetricFamily("traceprobe_map_export_deferred_points",
                                      "Points kept for a later export after a failure",
                                      value=exporter.failed_points)


def metrics_page(window: MapWindow, cache: MetadataCache, ingest: ReceiverStats,
                 exporter: MetricExporter | None, auth: IngestAuth | None = None
                 ) -> Callable[[], str]:
    """What serves /metrics: the map's numbers as Prometheus text, read when called."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MapCollector(window, cache, ingest, exporter, auth))
    return lambda: generate_latest(registry).decode()
