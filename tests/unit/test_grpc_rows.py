"""gRPC calls from records to the map's summaries and OTLP: status codes by name,
every code but OK an error, rpc.client/server.duration by rpc.grpc.status_code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from unit.test_db_request_rows import MS, _rec, _resolver

from harness.otlp_capture import Capture
from traceprobe_api.latency import bucket_of
from traceprobe_api.records import RequestCounts, Role
from traceprobe_map.export import EdgeExporter
from traceprobe_map.merge import merge
from traceprobe_map.snapshot import build_snapshot


def _calls(*rows: tuple[int, int]) -> list[dict[str, Any]]:
    return [{"protocol": "grpc", "method": "POST", "status": code, "count": n,
             "durationSumNs": n * MS, "durationBuckets": {bucket_of(MS): n}}
            for code, n in rows]


def test_records_hold_grpc_to_its_status_codes() -> None:
    RequestCounts.model_validate(_calls((16, 1))[0])
    for bad in ({**_calls((17, 1))[0]}, {**_calls((0, 1))[0], "method": "SELECT"}):
        with pytest.raises(ValidationError):
            RequestCounts.model_validate(bad)


def test_calls_are_errors_by_code_and_exported_as_rpc_durations_on_both_sides() -> None:
    rows = _calls((0, 20), (5, 3), (14, 1))
    edges = merge([_rec(Role.CLIENT, rows), _rec(Role.SERVER, rows)], _resolver()).edges
    (grpc,) = build_snapshot(edges, "c", 10, datetime.now(UTC)).edges[0].requests
    assert (grpc.protocol, grpc.requests, grpc.errors) == ("grpc", 24, 4)
    assert grpc.by_status == {"NOT_FOUND": 3, "OK": 20, "UNAVAILABLE": 1}
    capture = Capture()
    exporter = EdgeExporter(capture, "c", interval_seconds=3600)
    exporter.record(edges)
    assert exporter.flush()
    exporter.shutdown()
    points: dict[str, dict[Any, int]] = {}
    for rm in capture.batches[-1].resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    attrs = dict(p.attributes or {})
                    if m.name.startswith("rpc."):
                        assert attrs["rpc.system"] == "grpc"
                        points.setdefault(m.name, {})[
                            (attrs["rpc.grpc.status_code"], attrs.get("error.type"))] = \
                            p.count  # type: ignore[union-attr]
    want = {(0, None): 20, (5, "NOT_FOUND"): 3, (14, "UNAVAILABLE"): 1}
    assert points == {"rpc.client.duration": want, "rpc.server.duration": want}
