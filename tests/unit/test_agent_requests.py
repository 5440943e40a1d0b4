"""The kernel's request entries onto the edges they were answered on, and into records."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from traceprobe_agent.edges import to_record
from traceprobe_agent.kernel_rows import add_requests
from traceprobe_api.latency import BUCKETS
from traceprobe_api.records import Role

KEY: dict[str, Any] = {"cgroup": 7, "tgid": 42, "port": 8080, "family": 2, "role": 1,
                       "laddr": bytes([10, 0, 0, 1]) + bytes(12),
                       "raddr": bytes([10, 0, 0, 2]) + bytes(12)}
AT = datetime(2026, 1, 1, tzinfo=UTC)


def _entry(method: int, status: int, buckets: dict[int, int]) -> tuple[Any, Any]:
    counts = [buckets.get(i, 0) for i in range(BUCKETS)]
    return (SimpleNamespace(method=method, status=status, protocol=1),
            SimpleNamespace(count=sum(counts), duration_sum_ns=1000 * sum(counts),
                            buckets=counts, comm=b"curl\0\0"))


def test_requests_join_their_edge_or_make_one() -> None:
    edges: list[tuple[dict[str, Any], dict[str, Any]]] = [(dict(KEY), {"opened": 1,
                                                                      "comm": "curl"})]
    other = {**KEY, "port": 9090}
    add_requests(edges, [(dict(KEY), *_entry(1, 200, {40: 3, 41: 1})),
                         (dict(KEY), *_entry(99, 404, {10: 1})),
                         (other, *_entry(3, 500, {50: 2}))])
    assert len(edges) == 2
    joined = edges[0][1]["requests"]
    assert [(r["method"], r["status"], r["count"]) for r in joined] == [
        ("GET", 200, 4), ("_OTHER", 404, 1)]
    assert joined[0]["duration_buckets"] == {40: 3, 41: 1}
    made_key, made = edges[1]
    assert made_key["port"] == 9090 and made["comm"] == "curl"
    record = to_record(made_key, made, "n1", AT, AT, lambda _: None)
    assert record.role is Role.CLIENT and (record.opened, record.bytes_sent) == (0, 0)
    assert record.requests is not None
    assert [(r.method, r.status, r.count) for r in record.requests] == [("POST", 500, 2)]
    plain = to_record(dict(KEY), {"opened": 1, "comm": "curl"}, "n1", AT, AT, lambda _: None)
    assert plain.requests is None
