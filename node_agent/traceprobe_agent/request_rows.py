"""The kernel's request counts (bpf/http_messages.h's requests maps) onto the edges
they were answered on (pure: attribute reads of the entries bcc_runtime drained)."""

from __future__ import annotations

from typing import Any

from traceprobe_api.records import DNS_TYPES, HTTP_METHODS

PROTOCOLS = {1: "http", 2: "dns"}  # PROTO_*
UNPARSED = {3: "tls", 4: "http2"}  # PROTO_* counted as connections, not parsed
METHODS = {"http": ("_OTHER", *HTTP_METHODS),  # by METHOD_*: 0 is any other method
           "dns": ("_OTHER", *DNS_TYPES)}      # by QTYPE_* (dns_requests.h)


def _ident(key: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(key.values())


def request_row(k: Any, v: Any) -> dict[str, Any]:
    """One requests-map entry (struct req_key, struct req_val) as RequestCounts fields."""
    method, protocol = int(k.method), PROTOCOLS.get(int(k.protocol), "unknown")
    names = METHODS.get(protocol, ("_OTHER",))
    return {"protocol": protocol, "method": names[method] if method < len(names) else "_OTHER",
            "status": int(k.status), "count": int(v.count),
            "duration_sum_ns": int(v.duration_sum_ns),
            "duration_buckets": {i: int(n) for i, n in enumerate(v.buckets) if n}}


def add_requests(edges: list[tuple[dict[str, Any], dict[str, Any]]],
                 entries: list[tuple[dict[str, Any], Any, Any]]) -> None:
    """Each (edge key, req_key, req_val) onto its edge's value as a `requests` row (TLS
    and HTTP/2 as `unparsed` connections), in place; an edge with requests but no other
    count this interval is added."""
    by_edge = {_ident(key): val for key, val in edges}
    for key, k, v in entries:
        val = by_edge.get(_ident(key))
        if val is None:
            comm = bytes(v.comm).split(b"\0", 1)[0].decode(errors="replace")
            val = by_edge[_ident(key)] = {"comm": comm}
            edges.append((key, val))
        unparsed = UNPARSED.get(int(k.protocol))
        if unparsed:
            found = val.setdefault("unparsed", {})
            found[unparsed] = found.get(unparsed, 0) + int(v.count)
        else:
            val.setdefault("requests", []).append(request_row(k, v))
