"""Records over OTLP logs: exact round trip, and bad input named, never raised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from traceprobe_api.record_otlp import EVENT_NAME, decode, encode
from traceprobe_api.records import ConnectionRecord, Role


def _record(**kw: object) -> ConnectionRecord:
    end = datetime(2026, 11, 22, 1, 2, 3, 456789, tzinfo=UTC)
    return ConnectionRecord.model_validate({
        "node": "n1", "role": Role.CLIENT, "transport": "tcp", "family": "ipv4",
        "remote_ip": "10.0.0.2", "remote_port": 5432, "interval_start": end - timedelta(
            seconds=10), "interval_end": end, "opened": 3, "bytes_sent": 12345,
        "k8s_namespace": "shop", "k8s_host_network": False, **kw})


def test_round_trip_is_exact_through_the_wire() -> None:
    records = [_record(), _record(backends={"10.0.1.1:8080": 2, "[fd00::1]:80": 1}, pid=42,
                                  comm="curl", rtt_sum_us=900, rtt_samples=3)]
    wire = encode(records, "n1").SerializeToString()
    decoded, errors = decode(ExportLogsServiceRequest.FromString(wire))
    assert errors == [] and decoded == records


def test_invalid_records_are_named_and_the_valid_ones_kept() -> None:
    request = encode([_record(), _record(), _record()], "n1")
    logs = request.resource_logs[0].scope_logs[0].log_records
    logs[1].body.string_value = logs[1].body.string_value.replace(
        '"remotePort":5432', '"remotePort":70000')
    logs[2].body.CopyFrom(AnyValue(int_value=7))
    other = logs.add()
    other.event_name = "something.else"
    records, errors = decode(request)
    assert len(records) == 1
    assert errors[0].startswith("log record 1: field 'remotePort'")
    assert errors[1] == "log record 2: body must be the record as a JSON string"
    assert EVENT_NAME == "traceprobe.connection"
