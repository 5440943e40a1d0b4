"""What the map knows of an edge's requests: counts by side, protocol, method and
status, and each side's latency histogram (pure).

Both sides of an edge may report the same requests: the client's agent (time to first
byte of the response) and the server's (time to answer). Counts, like connections, are
the client's when a client side saw any, else the server's; latency is kept per side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field

from traceprobe_api.base import ObservedModel
from traceprobe_api.latency import quantiles
from traceprobe_api.records import RequestCounts

Side = Literal["client", "server"]
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(slots=True)
class RequestTally:
    counts: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)
    """(side, protocol, method, status) -> requests."""
    latency: Counter[tuple[str, str, str, int, int]] = field(default_factory=Counter)
    """(side, protocol, method, status, latency bucket) -> requests."""
    duration_ns: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)
    """(side, protocol, method, status) -> latency summed."""
    unparsed: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(side, protocol) -> connections seen to be TLS or HTTP/2, not parsed."""
    client_elsewhere: bool = False
    """A client side counted these requests in a neighbouring bucket (merge.finish): the
    server's figures here are its latency, not requests to count again."""

    def add_unparsed(self, side: Side, connections: dict[str, int]) -> None:
        for protocol, n in connections.items():
            self.unparsed[(side, protocol)] += n

    def unparsed_connections(self) -> dict[str, int]:
        """protocol -> connections, counted as requests are (the client's, if seen)."""
        out: dict[str, int] = {}
        for protocol in sorted({p for _, p in self.unparsed}):
            client = self.unparsed.get(("client", protocol), 0)
            out[protocol] = client if client or self.client_elsewhere else self.unparsed.get(
                ("server", protocol), 0)
        return out

    def add_rows(self, side: Side, rows: Iterable[RequestCounts]) -> None:
        for row in rows:
            kind = (side, row.protocol, row.method, row.status)
            self.counts[kind] += row.count
            self.duration_ns[kind] += row.duration_sum_ns
            for bucket, n in row.duration_buckets.items():
                self.latency[(*kind, bucket)] += n

    def histograms(self) -> dict[tuple[str, str, str, int], tuple[dict[int, int], int]]:
        """(side, protocol, method, status) -> (latency bucket -> requests, ns summed)."""
        out: dict[tuple[str, str, str, int], tuple[dict[int, int], int]] = {}
        for (side, protocol, method, status, bucket), n in self.latency.items():
            kind = (side, protocol, method, status)
            if kind not in out:
                out[kind] = ({}, self.duration_ns[kind])
            out[kind][0][bucket] = n
        return out

    def add(self, other: RequestTally, side: Side | None = None) -> None:
        """`other`'s counts (of one side only, when given) added to these."""
        self.client_elsewhere = self.client_elsewhere or other.client_elsewhere
        for mine, theirs in self._pairs(other):
            mine.update({k: n for k, n in theirs.items() if side is None or k[0] == side})

    def subtract(self, other: RequestTally) -> None:
        for mine, theirs in self._pairs(other):
            mine.subtract(theirs)
            kept = +mine  # drop zero and negative entries
            mine.clear()
            mine.update(kept)

    def _pairs(self, other: RequestTally) -> list[tuple[Counter, Counter]]:  # type: ignore[type-arg]
        return [(self.counts, other.counts), (self.latency, other.latency),
                (self.duration_ns, other.duration_ns), (self.unparsed, other.unparsed)]

    def __bool__(self) -> bool:
        return bool(self.counts or self.unparsed)


_Count = Annotated[int, Field(ge=0)]
_Rate = Annotated[float, Field(ge=0)]


class Latency(ObservedModel):
    """One side's request latency over the window, in milliseconds, from the kernel's
    buckets (each at most 25% wide: a quantile is good to that)."""

    samples: _Count = 0
    mean_ms: _Rate | None = None
    p50_ms: _Rate | None = None
    p95_ms: _Rate | None = None
    p99_ms: _Rate | None = None


class RequestSummary(ObservedModel):
    """An edge's requests of one protocol over the window."""

    protocol: str
    requests: _Count = 0
    requests_per_second: _Rate = 0.0
    errors: _Count = 0
    """HTTP: 4xx and 5xx answers on the client side, 5xx on the server side (when only it
    saw the edge); DNS: every response code but NOERROR; PostgreSQL: every SQLSTATE but
    00000; Redis: error replies."""
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    counted_by: Side = "client"
    """Whose records the counts are: the client's when a client-side agent saw any."""
    by_status: dict[str, _Count] = Field(default_factory=dict)
    """HTTP: by status code; DNS: by response code name (NOERROR, NXDOMAIN, ...);
    PostgreSQL: by SQLSTATE; Redis: OK or ERROR."""
    by_method: dict[str, _Count] = Field(default_factory=dict)
    """HTTP: by method; DNS: by the question's type (A, AAAA, ...); PostgreSQL: by the
    statement's first keyword (SELECT, ...); Redis: by command."""
    latency_by_client: Latency | None = None
    """Time from the request's first segment out to the response's first segment in,
    at the client; None when no client-side agent saw the requests."""
    latency_by_server: Latency | None = None
    """Time from the request's first segment in to the response's first segment out."""


DNS_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
              "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE")


GRPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
              "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
              "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
              "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def sqlstate(status: int) -> str:
    """A Postgres status (records.SQLSTATE_LIMIT) as its five characters."""
    chars = []
    for _ in range(5):
        status, digit = divmod(status, 36)
        chars.append(_BASE36[digit])
    return "".join(reversed(chars))


def status_name(protocol: str, status: int) -> str:
    """HTTP: the code; DNS: the response code's name (RFC 1035/2136), else its number;
    PostgreSQL: the SQLSTATE; Redis: OK or ERROR (an error reply); gRPC: the status
    code's name."""
    if protocol == "dns":
        return DNS_RCODES[status] if status < len(DNS_RCODES) else str(status)
    if protocol == "postgresql":
        return sqlstate(status)
    if protocol == "redis":
        return "ERROR" if status else "OK"
    if protocol == "grpc":
        return GRPC_CODES[status] if status < len(GRPC_CODES) else str(status)
    return str(status)


def is_error(side: str, protocol: str, status: int) -> bool:
    """HTTP: 5xx, and 4xx on the client side; DNS: any response code but NOERROR;
    PostgreSQL: any SQLSTATE but 00000; Redis: an error reply; gRPC: any status but OK."""
    if protocol in ("dns", "postgresql", "redis", "grpc"):
        return status != 0
    return status >= 500 or (side == "client" and status >= 400)


def _latency(tally: RequestTally, side: str, protocol: str) -> Latency | None:
    buckets: Counter[int] = Counter()
    for (s, p, _, _, bucket), n in tally.latency.items():
        if s == side and p == protocol:
            buckets[bucket] += n
    samples = sum(buckets.values())
    if not samples:
        return None
    total_ns = sum(ns for (s, p, _, _), ns in tally.duration_ns.items()
                   if s == side and p == protocol)
    p50, p95, p99 = (q / 1e6 if q is not None else None
                     for q in quantiles(buckets, *QUANTILES))
    return Latency(samples=samples, mean_ms=total_ns / samples / 1e6,
                   p50_ms=p50, p95_ms=p95, p99_ms=p99)


def summaries(tally: RequestTally | None, per_second: float) -> list[RequestSummary]:
    if not tally:
        return []
    out = []
    for protocol in sorted({p for _, p, _, _ in tally.counts}):
        sides = {s for s, p, _, _ in tally.counts if p == protocol}
        side: Side = "client" if "client" in sides or tally.client_elsewhere else "server"
        by_status: Counter[str] = Counter()
        by_method: Counter[str] = Counter()
        errors = 0
        for (s, p, method, status), n in tally.counts.items():
            if s == side and p == protocol:
                by_status[status_name(protocol, status)] += n
                by_method[method] += n
                errors += n if is_error(s, protocol, status) else 0
        total = sum(by_status.values())
        out.append(RequestSummary(
            protocol=protocol, requests=total, requests_per_second=total * per_second,
            errors=errors, error_rate=errors / total if total else 0.0, counted_by=side,
            by_status=dict(sorted(by_status.items())), by_method=dict(sorted(by_method.items())),
            latency_by_client=_latency(tally, "client", protocol),
            latency_by_server=_latency(tally, "server", protocol)))
    return out
