"""What the map view, the API and the CLI show of a snapshot (pure).

Filters narrow a `MapSnapshot` to what a person asked about; exports render one
as Graphviz DOT, Mermaid or JSON; `node_graph_*` shape it for Grafana's Node
Graph panel (the "Node Graph API" datasource plugin reads `/api/graph/fields`
and `/api/graph/data`). Everything here is a function of its arguments, so the
HTTP server and the CLI give the same answer for the same query.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from traceprobe_map.snapshot import MapEdge, MapNode, MapSnapshot

QUERY_PARAMETERS = ("namespace", "probe", "minRate", "search", "window")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class QueryError(ValueError):
    """A query parameter the API refuses (HTTP 400, CLI usage error)."""


@dataclass(frozen=True)
class MapQuery:
    """A filter over a snapshot; the empty query keeps everything."""

    namespaces: frozenset[str] = field(default_factory=frozenset)
    """Keep edges touching a node in one of these namespaces."""
    probe: str | None = None
    """Keep edges this probe observed (`namespace/name`, or `name` of a ClusterTraceProbe)."""
    min_rate: float = 0.0
    """Keep edges with at least this many connection attempts per second."""
    search: str = ""
    """Keep edges with an end whose id, name or namespace contains this (any case)."""
    window_seconds: float | None = None
    """Ask the source for this window; None is the source's whole window."""

    def as_params(self) -> dict[str, str]:
        """The query string form, for the CLI and links (inverse of `parse_query`)."""
        params = {"namespace": ",".join(sorted(self.namespaces)), "probe": self.probe or "",
                  "minRate": f"{self.min_rate:g}" if self.min_rate else "",
                  "search": self.search,
                  "window": f"{self.window_seconds:g}s" if self.window_seconds else ""}
        return {key: value for key, value in params.items() if value}


def parse_window(text: str) -> float:
    """The `window` query parameter in seconds: `90`, `30s`, `1.5m`, `1h` or `500ms`
    (decimals and bare seconds too, unlike the API's Go-style durations)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match[1]) <= 0:
        raise QueryError(f"window must be a positive duration like 30s, 5m or 1h, not {text!r}")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def parse_query(params: Mapping[str, Sequence[str]]) -> MapQuery:
    """A MapQuery from query parameters (each may repeat; `namespace` also takes commas)."""
    unknown = sorted(set(params) - set(QUERY_PARAMETERS))
    if unknown:
        raise QueryError(f"unknown query parameter(s) {', '.join(unknown)};"
                         f" known: {', '.join(QUERY_PARAMETERS)}")

    def last(name: str) -> str:
        values = params.get(name) or [""]
        return values[-1].strip()

    namespaces = frozenset(part.strip() for value in params.get("namespace", ())
                           for part in value.split(",") if part.strip())
    min_rate = 0.0
    if last("minRate"):
        try:
            min_rate = float(last("minRate"))
        except ValueError:
            raise QueryError(f"minRate must be a number, not {last('minRate')!r}") from None
        if not math.isfinite(min_rate) or min_rate < 0:
            raise QueryError(f"minRate must be a finite number >= 0, not {last('minRate')!r}")
    window = parse_window(last("window")) if last("window") else None
    return MapQuery(namespaces=namespaces, probe=last("probe") or None, min_rate=min_rate,
                    search=last("search"), window_seconds=window)


def traffic_rate(edge: MapEdge) -> float:
    """Connection attempts per second, accepted or not (UDP: datagrams both ways): an
    edge's traffic for filters and sorting, so an edge that only fails is not filtered
    away as idle."""
    if edge.transport == "udp":
        return edge.datagrams_sent_per_second + edge.datagrams_received_per_second
    return edge.attempts_per_second


def by_traffic(edges: Iterable[MapEdge]) -> list[MapEdge]:
    """Busiest first: attempts/s, then bytes/s both ways; the id makes ties stable."""
    return sorted(edges, key=lambda e: (-traffic_rate(e),
                                        -(e.bytes_sent_per_second + e.bytes_received_per_second),
                                        e.id))


def _node_matches(node: MapNode | None, query: MapQuery) -> tuple[bool, bool]:
    """(in the namespaces, matches the search) for one end of an edge."""
    if node is None:
        return (not query.namespaces, False)
    in_namespace = not query.namespaces or node.namespace in query.namespaces
    needle = query.search.lower()
    found = not needle or any(needle in (text or "").lower()
                              for text in (node.id, node.name, node.namespace))
    return (in_namespace, found)


def filter_snapshot(snapshot: MapSnapshot, query: MapQuery) -> MapSnapshot:
    """The part of `snapshot` the query asks for. Edges are kept when they pass the probe and
    rate filters and one of their ends is in the namespaces and one (maybe the other) matches
    the search; nodes are kept when a kept edge names them (as an end or a Service backend),
    or, with no edge-level filter, when they match by themselves."""
    nodes = {node.id: node for node in snapshot.nodes}
    kept_edges: list[MapEdge] = []
    for edge in snapshot.edges:
        if query.probe and query.probe not in edge.probes:
            continue
        if traffic_rate(edge) < query.min_rate:
            continue
        ends = [_node_matches(nodes.get(end), query) for end in (edge.source, edge.target)]
        if not any(inside for inside, _ in ends) or not any(found for _, found in ends):
            continue
        kept_edges.append(edge)
    named = {end for edge in kept_edges for end in (edge.source, edge.target)}
    named |= {backend.id for edge in kept_edges for backend in edge.backends}
    edge_filters = bool(query.probe or query.min_rate)
    kept_nodes = [node for node in snapshot.nodes
                  if node.id in named or (not edge_filters and all(_node_matches(node, query)))]
    return snapshot.model_copy(update={"nodes": kept_nodes, "edges": kept_edges})


def namespaces_of(snapshot: MapSnapshot) -> list[str]:
    return sorted({node.namespace for node in snapshot.nodes if node.namespace})


def label_of(node_id: str, nodes: Mapping[str, MapNode]) -> str:
    """`namespace/name` for namespaced nodes, the name otherwise; the id if unknown."""
    node = nodes.get(node_id)
    if node is None:
        return node_id
    return f"{node.namespace}/{node.name}" if node.namespace else node.name


# --- Grafana Node Graph ------------------------------------------------------------

def _fields(*specs: tuple[str, str, str]) -> list[dict[str, str]]:
    """(field_name, type, displayName) rows; arcs name their colour after a colon."""
    rows = []
    for name, kind, display in specs:
        row = {"field_name": name.split(":")[0], "type": kind}
        if ":" in name:
            row["color"] = name.split(":")[1]
        if display:
            row["displayName"] = display
        rows.append(row)
    return rows


_NODE_FIELDS = _fields(
    ("id", "string", ""), ("title", "string", ""), ("subtitle", "string", ""),
    ("mainstat", "number", "Connections in /s"),
    ("secondarystat", "number", "Error rate in (%)"),
    ("arc__ok:green", "number", "Accepted"), ("arc__failed:red", "number", "Failed"),
    ("detail__kind", "string", "Kind"), ("detail__workload_kind", "string", "Workload kind"),
    ("detail__pods", "string", "Pods"), ("detail__nodes", "string", "Nodes"),
    ("detail__ports", "string", "Ports"))
_EDGE_FIELDS = _fields(
    ("id", "string", ""), ("source", "string", ""), ("target", "string", ""),
    ("mainstat", "number", "Connections /s"), ("secondarystat", "number", "Error rate (%)"),
    ("thickness", "number", ""), ("color", "string", ""), ("detail__port", "string", "Port"),
    ("detail__failures", "string", "Failures"),
    ("detail__bytes_sent_per_second", "number", "Bytes/s client → server"),
    ("detail__bytes_received_per_second", "number", "Bytes/s server → client"),
    ("detail__retransmits", "number", "Retransmits, both ways"),
    ("detail__retransmits_client_to_server", "number", "Retransmits by the client"),
    ("detail__retransmits_server_to_client", "number", "Retransmits by the server"),
    ("detail__rtt_p50_us", "number", "RTT p50 (µs)"),
    ("detail__rtt_p99_us", "number", "RTT p99 (µs)"),
    ("detail__rtt_by_client_p50_us", "number", "RTT p50 by the client (µs)"),
    ("detail__rtt_by_server_p50_us", "number", "RTT p50 by the server (µs)"))


def node_graph_fields() -> dict[str, list[dict[str, str]]]:
    """The `/api/graph/fields` body: which fields `/api/graph/data` carries."""
    return {"nodes_fields": [dict(f) for f in _NODE_FIELDS],
            "edges_fields": [dict(f) for f in _EDGE_FIELDS]}


def edge_colour(error_rate: float) -> str:
    """Green when clean, amber from the first failure, red from 5 % (the page uses the same)."""
    return "#2e9e5b" if error_rate <= 0 else "#e0a020" if error_rate < 0.05 else "#d64040"


def edge_thickness(rate: float) -> float:
    """1 to 10 on a log scale of attempts/s: 0.1/s and 1000/s both stay visible."""
    return round(min(10.0, 1.0 + 2.0 * math.log10(1.0 + 10.0 * rate)), 2)


def node_graph_data(snapshot: MapSnapshot) -> dict[str, list[dict[str, Any]]]:
    """The `/api/graph/data` body. A node's arcs split the connection attempts it received
    (or, for a pure client, made) into accepted and failed; they sum to 1."""
    incoming: dict[str, list[MapEdge]] = {}
    outgoing: dict[str, list[MapEdge]] = {}
    for edge in snapshot.edges:
        incoming.setdefault(edge.target, []).append(edge)
        outgoing.setdefault(edge.source, []).append(edge)
    nodes = []
    for node in snapshot.nodes:
        edges_in = incoming.get(node.id, [])
        sample = edges_in or outgoing.get(node.id, [])
        attempts = sum(e.attempts for e in sample)
        failed = sum(e.failures.total for e in sample)
        ok = attempts - failed
        failed_in = sum(e.failures.total for e in edges_in)
        attempts_in = sum(e.attempts for e in edges_in)
        nodes.append({
            "id": node.id, "title": node.name,
            "subtitle": node.namespace or node.kind,
            "mainstat": round(sum(e.connections_per_second for e in edges_in), 3),
            "secondarystat": round(100.0 * failed_in / attempts_in, 2) if attempts_in else 0.0,
            "arc__ok": ok / attempts if attempts else 1.0,
            "arc__failed": failed / attempts if attempts else 0.0,
            "detail__kind": node.kind, "detail__workload_kind": node.workload_kind or "",
            "detail__pods": ", ".join(node.pods), "detail__nodes": ", ".join(node.nodes),
            "detail__ports": ", ".join(str(p) for p in node.ports)})
    edges = [{
        "id": e.id, "source": e.source, "target": e.target,
        "mainstat": round(e.connections_per_second, 3),
        "secondarystat": round(100.0 * e.error_rate, 2),
        "thickness": edge_thickness(traffic_rate(e)), "color": edge_colour(e.error_rate),
        "detail__port": f"{e.port}/{e.transport}" if e.port is not None else e.transport,
        "detail__failures": (f"refused {e.failures.refused}, timeout {e.failures.timeout},"
                             f" reset {e.failures.reset}"),
        "detail__bytes_sent_per_second": round(e.bytes_sent_per_second, 3),
        "detail__bytes_received_per_second": round(e.bytes_received_per_second, 3),
        "detail__retransmits": e.retransmits,
        # None where that side had no agent: Grafana shows nothing, not a measured 0.
        "detail__retransmits_client_to_server": e.retransmits_client_to_server,
        "detail__retransmits_server_to_client": e.retransmits_server_to_client,
        "detail__rtt_p50_us": e.rtt.p50_us, "detail__rtt_p99_us": e.rtt.p99_us,
        "detail__rtt_by_client_p50_us": e.rtt_by_client.p50_us if e.rtt_by_client else None,
        "detail__rtt_by_server_p50_us": e.rtt_by_server.p50_us if e.rtt_by_server else None,
    } for e in snapshot.edges]
    return {"nodes": nodes, "edges": edges}
