"""The kernel's drained entries as plain dicts (pure: attribute reads of what
bcc_runtime drained): edges (bpf/edge_maps.h), and the requests answered on them
(bpf/request_maps.h) joined onto their edges."""

from __future__ import annotations

from typing import Any

from traceprobe_api.records import DNS_TYPES, HTTP_METHODS, POSTGRES_OPERATIONS, REDIS_COMMANDS

EDGE_FIELDS = ("opened", "closed", "refused", "timeouts", "resets", "bytes_sent",
               "bytes_received", "retransmits", "rtt_sum_us", "rtt_samples", "rtt_max_us",
               "duration_sum_ns")


def edge_key(k: Any) -> dict[str, Any]:
    """A struct edge_key's fields."""
    return {"cgroup": int(k.cgroup), "tgid": int(k.tgid), "port": int(k.port),
            "family": int(k.family), "role": int(k.role),
            "laddr": bytes(k.laddr), "raddr": bytes(k.raddr)}


def edge_value(per_cpu: Any) -> dict[str, Any]:
    """One edge's per-CPU values, summed (the max of maxima, the widest span of
    opening times: `*_open_ns` are CLOCK_MONOTONIC, 0 when no connection counted)."""
    out: dict[str, Any] = {name: sum(int(getattr(v, name)) for v in per_cpu)
                           for name in EDGE_FIELDS}
    out["rtt_max_us"] = max(int(v.rtt_max_us) for v in per_cpu)
    opened = [int(v.first_open_ns) for v in per_cpu if v.first_open_ns]
    out["first_open_ns"] = min(opened, default=0)
    out["last_open_ns"] = max(int(v.last_open_ns) for v in per_cpu)
    comms = (bytes(v.comm).split(b"\0", 1)[0] for v in per_cpu)
    out["comm"] = next((c for c in comms if c), b"").decode(errors="replace")
    return out


PROTOCOLS = {1: "http", 2: "dns", 5: "postgresql", 6: "redis", 7: "grpc"}  # PROTO_*
UNPARSED = {3: "tls", 4: "http2"}  # PROTO_* counted as connections, not parsed
METHODS = {"http": ("_OTHER", *HTTP_METHODS),  # by METHOD_*: 0 is any other method
           "dns": ("_OTHER", *DNS_TYPES),      # by QTYPE_* (dns_requests.h)
           "postgresql": ("_OTHER", *POSTGRES_OPERATIONS),  # by OP_* (pg_messages.h)
           "redis": ("_OTHER", *REDIS_COMMANDS),            # by CMD_* (redis_messages.h)
           "grpc": ("_OTHER", *HTTP_METHODS)}               # the HTTP/2 request's


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
