"""`python -m traceprobe_map`: the service map component.

Agents send edge reports to --ingest-port (OTLP/gRPC logs); the map names both
ends from a cluster-wide watch, merges client and server sides into edges over
a sliding window, serves the read-only map view and /api/map on --http-port,
and, when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
is set, exports edge metrics there (protocol from OTEL_EXPORTER_OTLP_PROTOCOL,
headers, TLS and timeouts from the other standard OTEL_* variables).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time

from traceprobe_map.export import CountingExporter, EdgeExporter, make_exporter
from traceprobe_map.health import metrics_page
from traceprobe_map.metadata import MetadataCache
from traceprobe_map.peers import Resolver
from traceprobe_map.receiver import serve as serve_ingest
from traceprobe_map.snapshot import MapSnapshot
from traceprobe_map.window import MapWindow

log = logging.getLogger("traceprobe.map")


class WindowSource:
    """What the HTTP API reads: the window's snapshot and the probes known."""

    def __init__(self, window: MapWindow, cache: MetadataCache) -> None:
        self.window = window
        self.cache = cache

    def snapshot(self, window_seconds: float | None = None) -> MapSnapshot:
        return self.window.snapshot(window_seconds)

    def probes(self) -> list[str]:
        return self.cache.probe_refs()


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="traceprobe-service-map", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster-name", default=os.environ.get("TRACEPROBE_CLUSTER_NAME", "cluster"))
    p.add_argument("--ingest-address", default="0.0.0.0:4317",
                   help="host:port of the OTLP/gRPC ingest for agents")
    p.add_argument("--ingest-tls-cert", help="PEM certificate chain: serve the ingest over TLS")
    p.add_argument("--ingest-tls-key", help="PEM private key for --ingest-tls-cert")
    p.add_argument("--http-host", default="0.0.0.0")
    p.add_argument("--http-port", type=int, default=8080, help="map view and /api (read-only)")
    p.add_argument("--bucket-seconds", type=float, default=10.0)
    p.add_argument("--window-seconds", type=float, default=300.0)
    p.add_argument("--lateness-seconds", type=float, default=15.0,
                   help="how long to wait for a bucket's records from slower agents")
    p.add_argument("--export-interval", type=float, default=10.0, help="seconds between exports")
    p.add_argument("--service-graph", action="store_true",
                   help="also export Grafana's traces_service_graph_* metrics")
    p.add_argument("--max-edges", type=int, default=50_000)
    p.add_argument("--max-external", type=int, default=1000,
                   help="distinct external addresses named per window before the overflow "
                        "bucket (addresses unseen for a window free their place)")
    p.add_argument("--no-kubernetes", action="store_true",
                   help="do not watch a cluster (remote ends stay unresolved)")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def _exporter(args: argparse.Namespace) -> EdgeExporter | None:
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")):
        log.info("OTLP export off: set OTEL_EXPORTER_OTLP_ENDPOINT to export edge metrics")
        return None
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
    # Per metric: failures x3 kinds, bytes x2 directions, backends: 4 series per edge.
    return EdgeExporter(CountingExporter(make_exporter(protocol)), args.cluster_name,
                        args.export_interval, args.service_graph,
                        max_series=4 * args.max_edges)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(args.ingest_tls_cert) != bool(args.ingest_tls_key):
        print("traceprobe-service-map: --ingest-tls-cert and --ingest-tls-key go together",
              file=sys.stderr)
        return 2
    try:
        exporter = _exporter(args)
    except ValueError as exc:
        print(f"traceprobe-service-map: {exc}", file=sys.stderr)
        return 2
    resolver = Resolver(max_external=args.max_external, external_seconds=args.window_seconds)
    window = MapWindow(resolver, args.cluster_name, args.bucket_seconds, args.window_seconds,
                       args.lateness_seconds, args.max_edges,
                       on_bucket=exporter.record if exporter else None)
    cache = MetadataCache(resolver, lock=window.lock)
    window.probes_of = cache.probes_of
    stop = threading.Event()
    if not args.no_kubernetes:
        from traceprobe_api.kubeconfig import load_api_client
        from traceprobe_map.kube import watch_cluster

        watch_cluster(load_api_client(), cache, stop)
    tls = None
    if args.ingest_tls_cert:
        with open(args.ingest_tls_cert, "rb") as c, open(args.ingest_tls_key, "rb") as k:
            tls = (c.read(), k.read())
    ingest, ingest_port, ingest_stats = serve_ingest(
        lambda records: window.add(records, time.time()), args.ingest_address, tls=tls)
    from traceprobe_map.http_api import serve as serve_http

    http = serve_http(WindowSource(window, cache), args.http_host, args.http_port,
                      metrics=metrics_page(window, cache, ingest_stats,
                                           exporter.exporter if exporter else None))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # The window holds ~100k long-lived objects per bucket: a full collection every
    # few hundred allocations costs a third of a merge. Startup objects stay out.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    print(f'{{"ready": true, "ingestPort": {ingest_port}, "httpPort": {http.server_port}}}',
          file=sys.stderr, flush=True)
    expired_at = 0.0
    while not stop.wait(1.0):
        now = time.time()
        window.close_due(now)
        if now - expired_at >= 10:  # walks every address: not every second
            expired_at = now
            with window.lock:
                resolver.expire(now)
    ingest.stop(grace=2)
    window.close_due(float("inf"))  # the last buckets still get exported
    if exporter is not None:
        exporter.flush()
        exporter.shutdown()
    http.shutdown()
    log.info("stopped: %d records received, %d rejected", ingest_stats.records,
             ingest_stats.rejected_records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
