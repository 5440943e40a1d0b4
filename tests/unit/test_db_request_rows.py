"""PostgreSQL and Redis requests from the kernel's entries to the map's summaries and
OTLP: the kernel's tables and the records' agree, SQLSTATEs survive their encoding,
records are held to each protocol's methods and codes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from harness.otlp_capture import Capture
from traceprobe_agent.kernel_rows import request_row
from traceprobe_api.latency import BUCKETS, bucket_of
from traceprobe_api.records import (
    POSTGRES_OPERATIONS,
    REDIS_COMMANDS,
    SQLSTATE_LIMIT,
    ConnectionRecord,
    RequestCounts,
    Role,
)
from traceprobe_map.buckets import EdgeKey
from traceprobe_map.export import EdgeExporter
from traceprobe_map.merge import merge
from traceprobe_map.peers import Peer, Resolver
from traceprobe_map.request_tally import sqlstate
from traceprobe_map.snapshot import build_snapshot

BPF = Path(__file__).resolve().parents[2] / "bpf"
WEB = Peer("workload", "web", "shop", "Deployment")
DB = Peer("workload", "db", "shop", "StatefulSet")
MS = 1_000_000


def _table(header: str, macro: str) -> tuple[str, ...]:
    text = (BPF / header).read_text()
    body = text[text.index(f"#define {macro}(X)"):]
    body = body[:body.index("\n\n")]
    return tuple(re.findall(r"X\((\w+)\)", body))


def _code(text: str) -> int:
    """A SQLSTATE in base 36, as bpf/pg_messages.h's sqlstate() packs it."""
    return int(text, 36)


def test_the_kernels_tables_are_the_records_names_in_order() -> None:
    assert _table("pg_fields.h", "PG_OPERATIONS") == POSTGRES_OPERATIONS
    assert _table("redis_messages.h", "REDIS_COMMANDS") == REDIS_COMMANDS
    assert all(len(name) <= 8 for name in POSTGRES_OPERATIONS + REDIS_COMMANDS)  # one word


@pytest.mark.parametrize("code", ["00000", "00001", "42P01", "23505", "22012", "XX000",
                                  "ZZZZZ"])
def test_a_sqlstate_survives_its_encoding(code: str) -> None:
    assert sqlstate(_code(code)) == code
    assert _code(code) < SQLSTATE_LIMIT


def test_kernel_entries_name_their_operation_and_command() -> None:
    key = SimpleNamespace(method=POSTGRES_OPERATIONS.index("INSERT") + 1, protocol=5,
                          status=_code("23505"))
    val = SimpleNamespace(count=2, duration_sum_ns=4 * MS, buckets=[0] * BUCKETS)
    val.buckets[bucket_of(2 * MS)] = 2
    row = request_row(key, val)
    assert (row["protocol"], row["method"], row["status"]) == ("postgresql", "INSERT",
                                                               _code("23505"))
    RequestCounts.model_validate(row)
    redis = request_row(SimpleNamespace(method=0, protocol=6, status=1), val)
    assert (redis["protocol"], redis["method"], redis["status"]) == ("redis", "_OTHER", 1)


def _rows(protocol: str, *rows: tuple[str, int, int]) -> list[dict[str, Any]]:
    return [{"protocol": protocol, "method": m, "status": s, "count": n,
             "durationSumNs": n * MS, "durationBuckets": {bucket_of(MS): n}}
            for m, s, n in rows]


def test_records_hold_each_database_to_its_own_methods_and_codes() -> None:
    ok = _rows("postgresql", ("SELECT", _code("42P01"), 1))[0]
    RequestCounts.model_validate(ok)
    redis = _rows("redis", ("GET", 1, 1))[0]
    RequestCounts.model_validate(redis)
    for bad in ({**ok, "status": SQLSTATE_LIMIT}, {**ok, "method": "GET"},
                {**redis, "status": 2}, {**redis, "method": "INSERT"}):
        with pytest.raises(ValidationError):
            RequestCounts.model_validate(bad)


def _rec(role: Role, rows: list[dict[str, Any]]) -> ConnectionRecord:
    t = datetime.fromtimestamp(10, UTC)
    base: dict[str, Any] = {"node": "n1", "role": role, "transport": "tcp", "family": "ipv4",
                            "intervalStart": t, "intervalEnd": t, "opened": 1,
                            "requests": rows}
    if role is Role.CLIENT:
        base.update(remoteIp="10.0.0.2", remotePort=5432, k8sNamespace="shop",
                    k8sWorkload="web", k8sWorkloadKind="Deployment")
    else:
        base.update(node="n2", localPort=5432, remoteIp="10.0.0.1", k8sNamespace="shop",
                    k8sWorkload="db", k8sWorkloadKind="StatefulSet")
    return ConnectionRecord.model_validate(base)


def _resolver() -> Resolver:
    r = Resolver()
    r.pods.claim("10.0.0.1", WEB, since=0)
    r.pods.claim("10.0.0.2", DB, since=0)
    return r


def test_statements_are_counted_once_with_their_sqlstates_and_exported_as_db_operations() -> None:
    rows = _rows("postgresql", ("SELECT", 0, 40), ("SELECT", _code("42P01"), 3),
                 ("INSERT", _code("23505"), 2), ("INSERT", 0, 5))
    edges = merge([_rec(Role.CLIENT, rows), _rec(Role.SERVER, rows)], _resolver()).edges
    key = EdgeKey(WEB, DB, 5432, "tcp")
    (pg,) = build_snapshot(edges, "c", 10, datetime.now(UTC)).edges[0].requests
    assert (pg.protocol, pg.requests, pg.errors, pg.counted_by) == ("postgresql", 50, 5,
                                                                    "client")
    assert pg.by_status == {"00000": 45, "23505": 2, "42P01": 3}
    assert pg.by_method == {"INSERT": 7, "SELECT": 43}
    capture = Capture()
    exporter = EdgeExporter(capture, "c", interval_seconds=3600)
    exporter.record({key: edges[key]})
    assert exporter.flush()
    exporter.shutdown()
    points: list[Any] = [p for rm in capture.batches[-1].resource_metrics
                         for sm in rm.scope_metrics for m in sm.metrics
                         if m.name == "db.client.operation.duration"
                         for p in m.data.data_points]
    by = {(p.attributes["db.operation.name"], p.attributes.get("db.response.status_code"),
           p.attributes.get("error.type")): p.count for p in points}
    assert by == {("SELECT", None, None): 40, ("SELECT", "42P01", "42P01"): 3,
                  ("INSERT", "23505", "23505"): 2, ("INSERT", None, None): 5}
    assert {p.attributes["db.system.name"] for p in points} == {"postgresql"}
    assert {p.attributes["server.port"] for p in points} == {5432}


def test_redis_error_replies_are_errors_by_command() -> None:
    rows = _rows("redis", ("GET", 0, 9), ("INCR", 1, 2), ("_OTHER", 1, 1))
    edges = merge([_rec(Role.CLIENT, rows)], _resolver()).edges
    (redis,) = build_snapshot(edges, "c", 10, datetime.now(UTC)).edges[0].requests
    assert (redis.requests, redis.errors) == (12, 3)
    assert redis.by_status == {"ERROR": 3, "OK": 9}
    assert redis.by_method == {"GET": 9, "INCR": 2, "_OTHER": 1}
