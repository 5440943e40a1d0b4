"""Agents → service map over real gRPC: exact delivery, bad input refused by name,
and a map that is away: bounded queue, drops counted, delivery resumes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from harness.procs import free_port
from harness.waiting import wait_until
from traceprobe_agent.report_sender import ReportSender
from traceprobe_api.record_otlp import encode
from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_map.receiver import serve


def _collect(into: list[ConnectionRecord]) -> Callable[[list[ConnectionRecord]], int]:
    def sink(records: list[ConnectionRecord]) -> int:
        into.extend(records)
        return 0
    return sink


def _records(n: int, start: int = 0) -> list[ConnectionRecord]:
    end = datetime.now(UTC)
    return [ConnectionRecord(node="n1", role=Role.CLIENT, transport="tcp", family="ipv4",
                             remote_ip="10.0.0.2", remote_port=1000 + i, opened=i + 1,
                             interval_start=end - timedelta(seconds=1), interval_end=end)
            for i in range(start, start + n)]


def test_sender_to_receiver_delivers_exactly() -> None:
    got: list[ConnectionRecord] = []
    server, port, stats = serve(_collect(got), "127.0.0.1:0")
    sender = ReportSender(f"127.0.0.1:{port}", "n1")
    try:
        sent = _records(50)
        sender(sent[:20])
        sender(sent[20:])
        wait_until(lambda: len(got) == 50, timeout=10, what="all records at the map")
        assert got == sent and sender.stats.sent_records == 50
        assert stats.requests == 2 and stats.rejected_records == 0
    finally:
        sender.close()
        server.stop(0)


def test_invalid_records_are_refused_with_reasons_and_the_rest_kept() -> None:
    got: list[ConnectionRecord] = []
    server, port, stats = serve(_collect(got), "127.0.0.1:0")
    try:
        request = encode(_records(2), "n1")
        bad = request.resource_logs[0].scope_logs[0].log_records[0]
        bad.body.string_value = bad.body.string_value.replace('"client"', '"sideways"')
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = LogsServiceStub(channel)  # type: ignore[no-untyped-call]
            response = stub.Export(request, timeout=5)
        assert response.partial_success.rejected_log_records == 1
        assert "role" in response.partial_success.error_message
        assert len(got) == 1 and stats.rejected_records == 1
    finally:
        server.stop(0)


def test_map_away_queue_is_bounded_drops_counted_and_delivery_resumes() -> None:
    port = free_port()
    sender = ReportSender(f"127.0.0.1:{port}", "n1", max_queued_records=30,
                          timeout_seconds=1, max_backoff_seconds=0.5)
    got: list[ConnectionRecord] = []
    server = None
    try:
        for i in range(5):
            sender(_records(10, start=10 * i))
        wait_until(lambda: sender.stats.failed_exports >= 1, timeout=10, what="a failed send")
        assert sender.stats.dropped_records == 20  # oldest two batches
        assert sender.stats.queued_records == 30
        server, _, _ = serve(_collect(got), f"127.0.0.1:{port}")
        wait_until(lambda: len(got) == 30, timeout=20, what="queued records after recovery")
        assert [r.remote_port for r in got] == list(range(1020, 1050))  # newest kept, in order
        assert sender.stats.sent_records == 30 and sender.stats.queued_records == 0
    finally:
        sender.close()
        if server is not None:
            server.stop(0)
