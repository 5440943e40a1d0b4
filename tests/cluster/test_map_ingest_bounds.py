"""The map's ingest is bounded: bad records refused by field and limit with the rest of
the request kept, requests over the size or record caps refused without harm to later
ones, and an agent that splits what it sends to fit (real gRPC on both ends)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from harness.waiting import wait_until
from traceprobe_agent.report_sender import ReportSender
from traceprobe_api.ingest_limits import (
    MAX_MESSAGE_BYTES,
    MAX_RECORDS_PER_REQUEST,
    MAX_REQUEST_BYTES,
)
from traceprobe_api.record_otlp import encode
from traceprobe_api.records import MAX_BACKENDS, MAX_COUNT, ConnectionRecord, Role
from traceprobe_map.admission import admit
from traceprobe_map.receiver import serve

WINDOW = 300.0


def _record(i: int = 0, end: datetime | None = None, **fields: Any) -> ConnectionRecord:
    end = end or datetime.now(UTC)
    return ConnectionRecord(node="n1", role=Role.CLIENT, transport="tcp", family="ipv4",
                            remote_ip="10.0.0.2", remote_port=1000 + i % 60000, opened=1,
                            interval_start=end - timedelta(seconds=10), interval_end=end,
                            **fields)


class _Map:
    """The map's receiver with its admission at the real clock, collecting records."""

    def __init__(self) -> None:
        self.got: list[ConnectionRecord] = []
        self.sizes: list[int] = []
        self.server, self.port, self.stats = serve(
            self._sink, "127.0.0.1:0",
            admit=lambda records: admit(records, time.time(), WINDOW))

    def _sink(self, records: list[ConnectionRecord]) -> int:
        self.got.extend(records)
        self.sizes.append(len(records))
        return 0

    def export(self, request: ExportLogsServiceRequest) -> Any:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}", options=[
                ("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = LogsServiceStub(channel)  # type: ignore[no-untyped-call]
            return stub.Export(request, timeout=30)


@pytest.fixture
def the_map() -> Any:
    m = _Map()
    yield m
    m.server.stop(0)


def _edit(request: ExportLogsServiceRequest, index: int,
          change: Callable[[dict[str, Any]], None]) -> None:
    log = request.resource_logs[0].scope_logs[0].log_records[index]
    body = json.loads(log.body.string_value)
    change(body)
    log.body.string_value = json.dumps(body)


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("a counter of 2**64", lambda b: b.update(bytesSent=2**64), "bytesSent"),
    ("a negative counter", lambda b: b.update(opened=-1), "opened"),
    ("an invalid address", lambda b: b.update(remoteIp="10.0.0.300"), "remoteIp"),
    ("not an address", lambda b: b.update(localIp="<script>"), "localIp"),
    ("a giant string", lambda b: b.update(k8sWorkload="w" * 100_000), "k8sWorkload"),
    ("thousands of backends", lambda b: b.update(
        backends={f"10.1.{i // 250}.{i % 250}:80": 1 for i in range(MAX_BACKENDS + 1)}),
     "backends"),
    ("an empty node", lambda b: b.update(node=""), "node"),
    ("a port beyond 65535", lambda b: b.update(remotePort=70000), "remotePort"),
    ("a future end", lambda b: b.update(intervalEnd="2099-01-01T00:00:00Z"), "intervalEnd"),
    ("a past end", lambda b: b.update(intervalStart="2000-01-01T00:00:00Z",
                                      intervalEnd="2000-01-01T00:00:10Z"), "intervalEnd"),
    ("a start after the end", lambda b: b.update(
        intervalStart=(datetime.now(UTC) + timedelta(seconds=30)).isoformat()), "intervalStart"),
]


@pytest.mark.parametrize(("what", "change", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_record_is_refused_by_field_and_the_rest_kept(
        the_map: _Map, what: str, change: Callable[[dict[str, Any]], None], field: str) -> None:
    request = encode([_record(i) for i in range(3)], "n1")
    _edit(request, 1, change)
    response = the_map.export(request)
    assert response.partial_success.rejected_log_records == 1, what
    assert field in response.partial_success.error_message, response.partial_success
    assert [r.remote_port for r in the_map.got] == [1000, 1002]
    # Nothing lingers: the next request is taken whole.
    assert the_map.export(encode([_record(7)], "n1")).partial_success.rejected_log_records == 0
    assert the_map.got[-1].remote_port == 1007 and the_map.stats.rejected_records == 1


def test_the_largest_counter_is_taken() -> None:
    assert _record(bytes_sent=MAX_COUNT).bytes_sent == MAX_COUNT


def test_requests_over_the_caps_are_refused_and_later_ones_taken(the_map: _Map) -> None:
    many = encode([_record(i) for i in range(MAX_RECORDS_PER_REQUEST + 10)], "n1")
    assert many.ByteSize() < MAX_MESSAGE_BYTES
    response = the_map.export(many)
    assert response.partial_success.rejected_log_records == 10
    assert "over the limit of 5000 per request" in response.partial_success.error_message
    assert len(the_map.got) == MAX_RECORDS_PER_REQUEST
    big = encode([_record(i, comm="x" * 64, cgroup_path="/" + "p" * 4000)
                  for i in range(1200)], "n1")
    assert big.ByteSize() > MAX_MESSAGE_BYTES
    with pytest.raises(grpc.RpcError) as refused:
        the_map.export(big)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert the_map.export(encode([_record(1)], "n1")).partial_success.rejected_log_records == 0


def test_an_agent_splits_what_it_sends_to_fit_and_all_of_it_arrives(the_map: _Map) -> None:
    sender = ReportSender(f"127.0.0.1:{the_map.port}", "n1")
    try:
        small = [_record(i) for i in range(12_000)]  # over the record cap
        large = [_record(i, cgroup_path="/" + "p" * 4000) for i in range(2000)]  # over bytes
        sender(small)
        sender(large)
        wait_until(lambda: len(the_map.got) == 14_000, timeout=60, what="every record in")
        assert sender.stats.rejected_records == 0 and the_map.stats.rejected_records == 0
        assert max(the_map.sizes) <= MAX_RECORDS_PER_REQUEST and len(the_map.sizes) >= 5
        assert [r.remote_port for r in the_map.got[:12_000]] == [r.remote_port for r in small]
        per_record = len(encode(large[:1], "n1").SerializeToString())
        assert max(the_map.sizes[-3:]) * per_record <= MAX_REQUEST_BYTES * 1.01
    finally:
        sender.close()
