"""The map as text: a table of edges by traffic, or the views' exports (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from traceprobe_map import graph_exports, views
from traceprobe_map.snapshot import MapEdge, MapSnapshot

OUTPUTS = ("table", "wide", "json", "dot", "mermaid")


def rate(value: float) -> str:
    """Like the web page: three significant figures at most, never exponent notation."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def bytes_rate(value: float) -> str:
    for unit in ("B/s", "kB/s", "MB/s"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB/s"


def micros(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f}ms" if value >= 1000 else f"{value:.0f}µs"


def per_side(client: object, server: object) -> str:
    """`client/server`, `-` for a side no agent observed (not measured, not zero)."""
    return "/".join("-" if value is None else str(value) for value in (client, server))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """kubectl-style columns: left-aligned, three spaces apart, no borders."""
    widths = [max(len(str(cell)) for cell in column)
              for column in zip(headers, *rows, strict=True)]
    lines = ["   ".join(str(cell).ljust(width)
                        for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in (headers, *rows)]
    return "\n".join(lines) + "\n"


def _row(edge: MapEdge, labels: dict[str, str], wide: bool) -> list[str]:
    port = f"{edge.port}/{edge.transport}" if edge.port is not None else edge.transport
    row = [labels.get(edge.source, edge.source), labels.get(edge.target, edge.target), port,
           # UDP has no connections: its datagrams/s, both ways, marked as such.
           f"{rate(views.traffic_rate(edge))} dgram" if edge.transport == "udp"
           else rate(edge.connections_per_second), rate(edge.failures_per_second),
           f"{100 * edge.error_rate:.1f}%", bytes_rate(edge.bytes_sent_per_second),
           bytes_rate(edge.bytes_received_per_second), micros(edge.rtt.p50_us),
           micros(edge.rtt.p99_us), *_requests(edge)]
    if wide:
        f = edge.failures
        by_client, by_server = edge.rtt_by_client, edge.rtt_by_server
        row += [f"{f.refused}/{f.timeout}/{f.reset}",
                per_side(edge.retransmits_client_to_server, edge.retransmits_server_to_client),
                per_side(micros(by_client.p50_us) if by_client else None,
                         micros(by_server.p50_us) if by_server else None),
                ",".join(edge.observed_by) or "-", ",".join(edge.probes) or "-"]
    return row


def _requests(edge: MapEdge) -> list[str]:
    """REQ/S, REQ ERR and REQ P50/P99 (the client's latency where a client side saw the
    requests, else the server's), over every protocol; `-` for an edge without any."""
    if not edge.requests:
        return ["-", "-", "-"]
    total = sum(r.requests for r in edge.requests)
    errors = sum(r.errors for r in edge.requests)
    first = edge.requests[0]
    latency = first.latency_by_client or first.latency_by_server
    quantiles = "-" if latency is None else "/".join(
        "-" if q is None else micros(q * 1000) for q in (latency.p50_ms, latency.p99_ms))
    return [rate(sum(r.requests_per_second for r in edge.requests)),
            f"{100 * errors / total:.1f}%" if total else "-", quantiles]


def edge_table(snapshot: MapSnapshot, wide: bool = False) -> str:
    """Edges by traffic (connection attempts/s or UDP datagrams/s, then bytes/s). RTT
    P50/P99 take every sample, either side's; wide adds each side's own: RETRANS
    CLIENT/SERVER are the packets the client resent (client → server) / the server
    resent (server → client), RTT P50 CLIENT/SERVER as each side measured it, `-` for a
    side without an agent. REQ columns are the requests answered (probe kind http)."""
    if not snapshot.edges:
        return f"No edges in the last {snapshot.window_seconds:g}s match.\n"
    nodes = {node.id: node for node in snapshot.nodes}
    labels = {node_id: views.label_of(node_id, nodes) for node_id in nodes}
    headers = ["SOURCE", "TARGET", "PORT", "CONN/S", "FAIL/S", "ERRORS", "TX/S", "RX/S",
               "RTT P50", "RTT P99", "REQ/S", "REQ ERR", "REQ P50/P99"]
    if wide:
        headers += ["REFUSED/TIMEOUT/RESET", "RETRANS CLIENT/SERVER", "RTT P50 CLIENT/SERVER",
                    "OBSERVED BY", "PROBES"]
    return table(headers, [_row(edge, labels, wide) for edge in views.by_traffic(snapshot.edges)])


def render_map(snapshot: MapSnapshot, output: str) -> str:
    if output in ("table", "wide"):
        return edge_table(snapshot, wide=output == "wide")
    if output == "json":
        return graph_exports.to_json(snapshot)
    if output == "dot":
        return graph_exports.to_dot(snapshot)
    if output == "mermaid":
        return graph_exports.to_mermaid(snapshot)
    raise ValueError(f"unknown output {output!r}; one of {', '.join(OUTPUTS)}")
