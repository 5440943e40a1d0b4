"""An edge's requests as OTLP: semantic-convention latency histograms, and Grafana's
service-graph series counting requests (pure, onto the map's SeriesStore).

`http.client.request.duration` holds what client-side agents measured (request's first
segment out to the response's first segment in), `http.server.request.duration` the
server side's, each by `http.request.method` and `http.response.status_code`;
`dns.lookup.duration` the clients' DNS lookups (query out to response in) by
`dns.question.type` (the question's type, never its name) with the response code's name
as `error.type` unless NOERROR; all in the kernel's buckets (traceprobe_api.latency) as
explicit bounds in seconds; `db.client.operation.duration` the clients' PostgreSQL
statements and Redis commands (request out to the response's first byte in) by
`db.system.name`, `db.operation.name` and, on errors, `db.response.status_code`;
`rpc.client.duration` / `rpc.server.duration` gRPC calls by `rpc.grpc.status_code`.
"""

from __future__ import annotations

from typing import Any

from traceprobe_map.buckets import EdgeKey
from traceprobe_map.request_tally import RequestTally, is_error, status_name, summaries
from traceprobe_map.series import Instrument, SeriesStore

HTTP_DURATION = {
    "client": Instrument("http.client.request.duration", "s",
                         "Duration of HTTP client requests (to the response's first byte)"),
    "server": Instrument("http.server.request.duration", "s",
                         "Duration of HTTP server requests (to the response's first byte)")}
DNS_LOOKUP = Instrument("dns.lookup.duration", "s",
                        "Duration of DNS lookups, query out to response in, at the client")
DB_OPERATION = Instrument("db.client.operation.duration", "s",
                          "Duration of database client operations (to the response's first"
                          " byte)")
DB_SYSTEMS = {"postgresql", "redis"}
RPC_DURATION = {
    "client": Instrument("rpc.client.duration", "s",
                         "Duration of gRPC calls at the client (to the response headers)"),
    "server": Instrument("rpc.server.duration", "s",
                         "Duration of gRPC calls at the server (to the response headers)")}
SG_SECONDS = {"client": Instrument("traces_service_graph_request_client_seconds", "s", ""),
              "server": Instrument("traces_service_graph_request_server_seconds", "s", "")}
UNPARSED = Instrument("traceprobe.edge.unparsed.connections", "{connection}",
                      "Connections whose requests are not parsed, by network.protocol.name"
                      " (tls, http2)")
SG_TOTAL = Instrument("traces_service_graph_request_total", "", "")
SG_FAILED = Instrument("traces_service_graph_request_failed_total", "", "")


def record_requests(series: SeriesStore, key: EdgeKey, tally: RequestTally,
                    attrs: dict[str, Any], now: float, now_ns: int) -> None:
    for protocol, n in tally.unparsed_connections().items():
        series.add(UNPARSED, n, {**attrs, "network.protocol.name": protocol}, now, now_ns)
    for (side, protocol, method, status), (buckets, sum_ns) in tally.histograms().items():
        point = {**attrs, "server.address": key.dst.name}
        if protocol == "dns":
            if side != "client":
                continue  # the conventions time lookups only where they are made
            point["dns.question.type"] = method
            instrument = DNS_LOOKUP
        elif protocol == "grpc":
            point |= {"rpc.system": "grpc", "rpc.grpc.status_code": status}
            instrument = RPC_DURATION[side]
        elif protocol in DB_SYSTEMS:
            if side != "client":
                continue  # the conventions define the client's duration only
            point |= {"db.system.name": protocol, "db.operation.name": method}
            if is_error(side, protocol, status) and protocol == "postgresql":
                point["db.response.status_code"] = status_name(protocol, status)
            instrument = DB_OPERATION
        else:
            point |= {"http.request.method": method, "http.response.status_code": status}
            instrument = HTTP_DURATION[side]
        if is_error(side, protocol, status):
            point["error.type"] = status_name(protocol, status)
        series.add_histogram(instrument, buckets, sum_ns, point, now, now_ns)


def graph_requests(series: SeriesStore, tally: RequestTally, sg: dict[str, Any], now: float,
                   now_ns: int) -> None:
    """Requests (once, by the side that counts them) and both sides' latency."""
    for summary in summaries(tally, 1.0):
        series.add(SG_TOTAL, summary.requests, sg, now, now_ns)
        series.add(SG_FAILED, summary.errors, sg, now, now_ns)
    for (side, _, _, _), (buckets, sum_ns) in tally.histograms().items():
        series.add_histogram(SG_SECONDS[side], buckets, sum_ns, sg, now, now_ns)
