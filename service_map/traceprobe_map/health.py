"""The service map's own numbers as Prometheus text: what came in, what was
dropped or refused and why, how merging and exporting are doing."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import MetricExporter

from traceprobe_map.export import CountingExporter
from traceprobe_map.metadata import MetadataCache
from traceprobe_map.receiver import ReceiverStats
from traceprobe_map.window import MapWindow


def _lines(name: str, kind: str, samples: dict[str, float]) -> list[str]:
    out = [f"# TYPE {name} {kind}"]
    out += [f"{name}{{{labels}}} {value:g}" if labels else f"{name} {value:g}"
            for labels, value in samples.items()]
    return out


def render_metrics(window: MapWindow, cache: MetadataCache, ingest: ReceiverStats,
                   exporter: MetricExporter | None) -> str:
    w = window.stats
    lines = _lines("traceprobe_map_records_total", "counter", {
        'outcome="accepted"': w.records, 'outcome="late"': w.late_records,
        'outcome="dropped"': w.dropped_records, 'outcome="rejected"': ingest.rejected_records,
        'outcome="udp_not_drawn"': w.udp_records})
    lines += _lines("traceprobe_map_ingest_requests_total", "counter", {"": ingest.requests})
    lines += _lines("traceprobe_map_overflow_total", "counter", {
        'what="edges"': w.overflowed_edges,
        'what="externals"': window.resolver.overflowed})
    lines += _lines("traceprobe_map_buckets_merged_total", "counter", {"": w.buckets_merged})
    lines += _lines("traceprobe_map_last_merge_seconds", "gauge", {"": w.last_merge_seconds})
    lines += _lines("traceprobe_map_objects", "gauge",
                    {f'kind="{k}"': v for k, v in cache.sizes().items()})
    if isinstance(exporter, CountingExporter):
        lines += _lines("traceprobe_map_exports_total", "counter", {
            'outcome="ok"': exporter.exports - exporter.failed_exports,
            'outcome="failed"': exporter.failed_exports})
        lines += _lines("traceprobe_map_export_deferred_points_total", "counter",
                        {"": exporter.failed_points})
    return "\n".join(lines) + "\n"
