"""`python -m traceprobe_map`: the service map component.

Agents send edge reports to --ingest-address (OTLP/gRPC logs); the map names both
ends from a cluster-wide watch, merges client and server sides into edges over
a sliding window, serves the read-only map view and /api/map on --http-port,
and, when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
is set, exports edge metrics there (protocol from OTEL_EXPORTER_OTLP_PROTOCOL,
headers, TLS and timeouts from the other standard OTEL_* variables). Every flag
and variable is checked before anything starts (settings.py, otlp_settings.py): bad
input, an unusable kubeconfig or a port that cannot be had exits 2 with one line.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from traceprobe_api.addresses import host_port, redact
from traceprobe_map.settings import PROG, MapSettings, UsageError, load

if TYPE_CHECKING:  # the rest loads once the settings are good: bad input answers fast
    from traceprobe_map.export import EdgeExporter
    from traceprobe_map.ingest_auth import IngestAuth
    from traceprobe_map.metadata import MetadataCache
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


def _exporter(settings: MapSettings) -> EdgeExporter | None:
    from traceprobe_map.export import CountingExporter, EdgeExporter, make_exporter

    otlp = settings.otlp
    if otlp is None or not otlp.enabled:
        why = ("OTEL_SDK_DISABLED is true" if otlp else
               "set OTEL_EXPORTER_OTLP_ENDPOINT to export edge metrics")
        log.info("OTLP export off: %s", why)
        return None
    log.info("exporting edge metrics over OTLP/%s to %s every %gs", otlp.protocol,
             redact(otlp.target[1]), settings.export_interval)
    # Per metric: failures x3 kinds, bytes x2 directions, backends: 4 series per edge.
    return EdgeExporter(CountingExporter(make_exporter(otlp.protocol)), settings.cluster_name,
                        settings.export_interval, settings.service_graph,
                        max_series=4 * settings.max_edges, keep_seconds=settings.window_seconds)


def _ingest_auth(settings: MapSettings, api: Any) -> IngestAuth | None:
    from traceprobe_map.ingest_auth import IngestAuth
    from traceprobe_map.kube import TokenReviews

    account = settings.agent_service_account
    if account is None or api is None:
        log.warning("ingest is not authenticated: anyone who reaches %s can write the map "
                    "(set --agent-service-account, as the chart does)", settings.ingest_address)
        return None
    namespace, _, name = account.partition("/")
    log.info("ingest accepts tokens of ServiceAccount %s for audience %r only", account,
             settings.token_audience)
    return IngestAuth(TokenReviews(api), f"system:serviceaccount:{namespace}:{name}",
                      settings.token_audience)


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def _listen_problem(settings: MapSettings) -> str | None:
    """Whether both servers can listen, asked before anything is logged: their own
    failures would come after other output (gRPC's core even prints a line itself)."""
    ingest_host, ingest_port = host_port(settings.ingest_address)
    for what, host, port, family, reuse_port in (
            (f"--ingest-address={settings.ingest_address!r}", ingest_host, ingest_port, 0,
             True),
            (f"--http-host={settings.http_host!r} --http-port={settings.http_port}",
             settings.http_host, settings.http_port, socket.AF_INET, False)):
        try:
            addresses = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except OSError as exc:
            return f"{what}: cannot listen there ({exc.strerror or exc})"
        errors: list[OSError] = []
        for af, kind, proto, _, address in addresses:
            with socket.socket(af, kind, proto) as probe:  # as the servers set it up
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                try:
                    probe.bind(address)
                except OSError as exc:
                    errors.append(exc)
        if len(errors) == len(addresses):  # gRPC listens if any address binds
            return f"{what}: cannot listen there ({errors[0].strerror or errors[0]})"
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load(argv, os.environ)
    except UsageError as exc:
        return _fail(str(exc))
    api = None
    if not settings.no_kubernetes:
        from traceprobe_api.kubeconfig import KubeconfigError, load_api_client

        try:  # reads files only: an API server that does not answer is retried later
            api = load_api_client()
        except KubeconfigError as exc:
            return _fail(str(exc))
    if problem := _listen_problem(settings):
        return _fail(problem)
    return _serve(settings, api)


def _serve(settings: MapSettings, api: Any) -> int:
    from traceprobe_map.admission import admit
    from traceprobe_map.health import metrics_page
    from traceprobe_map.metadata import MetadataCache
    from traceprobe_map.peers import Resolver
    from traceprobe_map.receiver import serve as serve_ingest
    from traceprobe_map.window import MapWindow

    logging.basicConfig(level=logging.DEBUG if settings.verbose else logging.INFO,
                        stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.verbose:  # one line per failed request is ours (kube.py), not three
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        exporter = _exporter(settings)
    except (ValueError, RuntimeError, OSError) as exc:  # the SDK's own word on OTEL_*
        return _fail(f"OTLP exporter: {exc}")
    resolver = Resolver(max_external=settings.max_external,
                        external_seconds=settings.window_seconds)
    window = MapWindow(resolver, settings.cluster_name, settings.bucket_seconds,
                       settings.window_seconds, settings.lateness_seconds, settings.max_edges,
                       on_bucket=exporter.record if exporter else None)
    cache = MetadataCache(resolver, lock=window.lock)
    window.probes_of = cache.probes_of
    stop = threading.Event()
    tls = None
    if settings.ingest_tls_cert and settings.ingest_tls_key:
        tls = (settings.ingest_tls_cert, settings.ingest_tls_key)
    auth = _ingest_auth(settings, api)
    try:
        ingest, ingest_port, ingest_stats = serve_ingest(
            lambda records: window.add(records, time.time()), settings.ingest_address, tls=tls,
            admit=lambda records: admit(records, time.time(), settings.window_seconds),
            authenticate=auth.check if auth else None)
    except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
        if exporter is not None:
            exporter.shutdown()
        return _fail(f"--ingest-address={settings.ingest_address!r}: cannot listen there "
                     f"({exc})")
    from traceprobe_map.http_api import serve as serve_http

    watch_health = None
    if api is not None:
        from traceprobe_map.kube import WatchHealth

        watch_health = WatchHealth(str(api.configuration.host))
    try:
        http = serve_http(WindowSource(window, cache), settings.http_host, settings.http_port,
                          metrics=metrics_page(window, cache, ingest_stats,
                                               exporter.exporter if exporter else None, auth),
                          problem=watch_health.problem if watch_health else None)
    except OSError as exc:
        ingest.stop(grace=0)
        if exporter is not None:
            exporter.shutdown()
        return _fail(f"--http-host={settings.http_host!r} --http-port={settings.http_port}: "
                     f"cannot listen there ({exc.strerror or exc})")
    if api is not None:
        from traceprobe_map.kube import watch_cluster

        watch_cluster(api, cache, stop, watch_health)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # The window holds ~100k long-lived objects per bucket: a full collection every
    # few hundred allocations costs a third of a merge. Startup objects stay out.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    # One write, newline included: print() writes the end apart, and a watch thread's log
    # line could land between the two, breaking the line readers wait for.
    sys.stderr.write(f'{{"ready": true, "ingestPort": {ingest_port}, '
                     f'"httpPort": {http.server_port}}}\n')
    sys.stderr.flush()
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
