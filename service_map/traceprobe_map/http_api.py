"""The service map's read-only HTTP server: the web view, `/api/map`, Grafana Node Graph
endpoints and exports, over any `MapSource`.

Users reach it through the API server's service proxy
(`/api/v1/namespaces/<ns>/services/<name>:http/proxy/`), so Kubernetes
authenticates and authorises them (RBAC on `services/proxy`) and this server
needs no auth of its own (the chart's NetworkPolicy keeps other pods out); for
the same reason every link the page follows is relative. Only GET and HEAD
exist: nothing here changes state. Clients are bounded in number and time, and
snapshots are made one at a time and shared, so neither slow nor many viewers
hold up the ingest.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from traceprobe_api.http_server import CLIENT_TIMEOUT_SECONDS, BoundedHTTPServer
from traceprobe_map import graph_exports, views
from traceprobe_map.snapshot import MapSnapshot

log = logging.getLogger(__name__)

_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".LICENSE": "text/plain; charset=utf-8"}
_JSON = "application/json"
# No inline script, nothing from elsewhere; cytoscape sets element styles from script.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline';"
        " img-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; base-uri 'none'")
_SNAPSHOT_REUSE_SECONDS = 1.0
_SNAPSHOTS_KEPT = 8  # distinct ?window= values remembered for that second
MAX_CONNECTIONS = 32
_GZIP_OVER = 1400  # bytes; smaller bodies fit one packet anyway


class MapSource(Protocol):
    """Where the server gets its map; the service map's sliding window implements it."""

    def snapshot(self, window_seconds: float | None = None) -> MapSnapshot:
        """The map over the last `window_seconds` (None: the source's whole window)."""
        ...

    def probes(self) -> list[str]:
        """Names of the probes feeding the map (`namespace/name`, or `name`)."""
        ...


def load_static() -> dict[str, bytes]:
    """The page and its vendored library, keyed by URL path. Read once: they never change
    while the process runs, and a fixed set of keys rules out path tricks."""
    files: dict[str, bytes] = {}
    web = resources.files("traceprobe_map") / "web"
    for entry in web.iterdir():
        if entry.is_file() and any(entry.name.endswith(s) for s in _STATIC_TYPES):
            files[f"/{entry.name}"] = entry.read_bytes()
    vendor = web / "vendor"
    if vendor.is_dir():
        for entry in vendor.iterdir():
            if entry.is_file() and any(entry.name.endswith(s) for s in _STATIC_TYPES):
                files[f"/vendor/{entry.name}"] = entry.read_bytes()
    if "/vendor/cytoscape.js" not in files:
        log.warning("map view: graph library missing from %s (run scripts/fetch-web-assets.sh);"
                    " the API works, the page will not draw", vendor)
    files["/"] = files.get("/index.html", b"")
    return files


class _Reply:
    """A response before it is sent: status, content type, body, extra headers."""

    def __init__(self, status: int, content_type: str, body: bytes,
                 headers: dict[str, str] | None = None) -> None:
        self.status, self.content_type, self.body = status, content_type, body
        self.headers = headers or {}


def _json(data: Any, status: int = 200) -> _Reply:
    return _Reply(status, _JSON, json.dumps(data, separators=(",", ":")).encode())


def _error(status: HTTPStatus, message: str) -> _Reply:
    return _json({"error": status.phrase, "message": message}, status)


class MapApi:
    """Routes a GET to a reply; no sockets here, so the server class stays thin."""

    def __init__(self, source: MapSource, static: dict[str, bytes] | None = None,
                 metrics: Callable[[], str] | None = None,
                 problem: Callable[[], str | None] | None = None) -> None:
        self.source = source
        self.metrics = metrics
        self.problem = problem
        self._cache: dict[float | None, tuple[float, MapSnapshot]] = {}
        self._cache_lock = threading.Lock()
        self._making = threading.Lock()  # one snapshot at a time; the others wait for it
        self.static = load_static() if static is None else static
        self.routes: dict[str, Callable[[views.MapQuery], _Reply]] = {
            "/api/map": lambda q: _json(self._map(q).to_dict()),
            "/api/graph/fields": lambda q: _json(views.node_graph_fields()),
            "/api/graph/data": lambda q: _json(views.node_graph_data(self._map(q))),
            "/api/export/json": lambda q: self._export(q, "json", _JSON, graph_exports.to_json),
            "/api/export/dot": lambda q: self._export(
                q, "dot", "text/vnd.graphviz; charset=utf-8", graph_exports.to_dot),
            "/api/export/mermaid": lambda q: self._export(
                q, "mmd", "text/plain; charset=utf-8", graph_exports.to_mermaid),
            "/api/filters": self._filters,
        }

    def _cached(self, window_seconds: float | None) -> MapSnapshot | None:
        with self._cache_lock:
            hit = self._cache.get(window_seconds)
        if hit is not None and time.monotonic() - hit[0] < _SNAPSHOT_REUSE_SECONDS:
            return hit[1]
        return None

    def _snapshot(self, window_seconds: float | None) -> MapSnapshot:
        """The source's snapshot, reused for a second: a page refresh asks for the
        map and its filters together, and a whole-window snapshot is not free. Made
        one at a time: many viewers cost one snapshot, not one each."""
        hit = self._cached(window_seconds)
        if hit is not None:
            return hit
        with self._making:
            hit = self._cached(window_seconds)  # made while this one waited
            if hit is not None:
                return hit
            made_at = time.monotonic()
            snapshot = self.source.snapshot(window_seconds)
            with self._cache_lock:
                fresh = {w: c for w, c in self._cache.items()
                         if made_at - c[0] < _SNAPSHOT_REUSE_SECONDS}
                fresh[window_seconds] = (made_at, snapshot)
                self._cache = dict(list(fresh.items())[-_SNAPSHOTS_KEPT:])
        return snapshot

    def _map(self, query: views.MapQuery) -> MapSnapshot:
        return views.filter_snapshot(self._snapshot(query.window_seconds), query)

    def _export(self, query: views.MapQuery, suffix: str, content_type: str,
                render: Callable[[MapSnapshot], str]) -> _Reply:
        snapshot = self._map(query)
        return _Reply(200, content_type, render(snapshot).encode(), {
            "Content-Disposition": f'inline; filename="service-map.{suffix}"'})

    def _filters(self, query: views.MapQuery) -> _Reply:
        """What the page's filter controls offer: every namespace and probe in the window."""
        snapshot = self._snapshot(query.window_seconds)
        return _json({"cluster": snapshot.cluster, "windowSeconds": snapshot.window_seconds,
                      "namespaces": views.namespaces_of(snapshot),
                      "probes": sorted(self.source.probes())})

    def get(self, target: str) -> _Reply:
        url = urlsplit(target)
        path = url.path
        if path in ("/healthz", "/api/health"):  # the second is what the Grafana plugin tests
            problem = self.problem() if self.problem is not None else None
            if problem:
                return _Reply(503, "text/plain; charset=utf-8", f"unhealthy: {problem}".encode())
            return _Reply(200, "text/plain; charset=utf-8", b"ok")
        if path == "/metrics" and self.metrics is not None:
            return _Reply(200, "text/plain; version=0.0.4", self.metrics().encode())
        if path in self.static:
            suffix = "." + path.rsplit(".", 1)[-1] if "." in path else ".html"
            return _Reply(200, _STATIC_TYPES[suffix], self.static[path],
                          {"Cache-Control": "no-cache"})
        route = self.routes.get(path)
        if route is None:
            return _error(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        try:
            query = views.parse_query(parse_qs(url.query, keep_blank_values=True))
        except views.QueryError as exc:
            return _error(HTTPStatus.BAD_REQUEST, str(exc))
        try:
            reply = route(query)
        except Exception as exc:  # a source not ready yet must not take the server down
            log.exception("map source failed for %s", target)
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, f"map not available: {exc}")
        reply.headers.setdefault("Cache-Control", "no-store")
        return reply


class _Handler(BaseHTTPRequestHandler):
    server_version = "traceprobe-map"
    timeout = CLIENT_TIMEOUT_SECONDS  # per read and write: a stalled client lets go
    api: MapApi  # set on a subclass per server

    def do_GET(self) -> None:
        self._send(self.api.get(self.path), body=True)

    def do_HEAD(self) -> None:
        self._send(self.api.get(self.path), body=False)

    def _refuse(self) -> None:
        reply = _error(HTTPStatus.METHOD_NOT_ALLOWED, "the service map is read-only")
        reply.headers["Allow"] = "GET, HEAD"
        self._send(reply, body=True)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _refuse

    def _send(self, reply: _Reply, body: bool) -> None:
        payload = reply.body
        gzipped = (len(payload) > _GZIP_OVER
                   and "gzip" in self.headers.get("Accept-Encoding", ""))
        if gzipped:
            payload = gzip.compress(payload, compresslevel=5)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Vary", "Accept-Encoding")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def serve(source: MapSource, host: str = "0.0.0.0", port: int = 8080,
          metrics: Callable[[], str] | None = None,
          problem: Callable[[], str | None] | None = None,
          max_connections: int = MAX_CONNECTIONS) -> BoundedHTTPServer:
    """Serve in a daemon thread; `port=0` picks a free port (see `server_address`).
    `metrics` renders Prometheus text for /metrics; `problem` says why /healthz fails
    (None: healthy). Stop with `shutdown()` then `server_close()`."""
    handler = type("MapHandler", (_Handler,), {"api": MapApi(source, metrics=metrics,
                                                             problem=problem)})
    server = BoundedHTTPServer((host, port), handler, max_connections=max_connections)
    thread = threading.Thread(target=server.serve_forever, name="map-http", daemon=True)
    thread.start()
    log.info("service map view on http://%s:%d/", *server.server_address[:2])
    return server
