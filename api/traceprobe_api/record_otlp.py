"""Connection records as OTLP log records: how agents report edges to the map.

One OTLP LogRecord per ConnectionRecord (event name `traceprobe.connection`),
fields as attributes under their wire names, timestamps as Unix nanoseconds.
OTLP keeps the hop standard (any collector can sit in between or tap it); logs
rather than metrics because a record is one exact observation with a start and
an end, not a series the SDK would re-aggregate. Decoding never raises: what
does not validate is returned as an error naming the record and the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from pydantic import ValidationError

from traceprobe_api.records import ConnectionRecord

EVENT_NAME = "traceprobe.connection"
SCOPE = "traceprobe.agent"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(
            values=[KeyValue(key=str(k), value=_any(v)) for k, v in value.items()]))
    return AnyValue(string_value=str(value))


def _plain(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    if which == "array_value":
        return [_plain(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def _nanos(at: datetime) -> int:
    # Integer arithmetic: a float round trip would lose microseconds.
    return (at - _EPOCH) // _MICRO * 1000


def encode(records: Iterable[ConnectionRecord], node: str) -> ExportLogsServiceRequest:
    logs = []
    for record in records:
        fields = record.model_dump(by_alias=True, exclude_none=True,
                                   exclude={"interval_start", "interval_end"})
        if not fields.get("backends"):
            fields.pop("backends", None)
        logs.append(LogRecord(
            time_unix_nano=_nanos(record.interval_end),
            observed_time_unix_nano=_nanos(record.interval_start),
            event_name=EVENT_NAME,
            attributes=[KeyValue(key=k, value=_any(v)) for k, v in fields.items()]))
    resource = [KeyValue(key="service.name", value=_any("traceprobe-agent")),
                KeyValue(key="k8s.node.name", value=_any(node))]
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=resource),
        scope_logs=[ScopeLogs(scope=InstrumentationScope(name=SCOPE), log_records=logs)])])


def _from_nanos(nanos: int) -> datetime:
    return _EPOCH + timedelta(microseconds=nanos // 1000)


def decode(request: ExportLogsServiceRequest) -> tuple[list[ConnectionRecord], list[str]]:
    """Records, and one error line per log record that is not a valid record.
    Log records with another event name are skipped (not ours, not an error)."""
    records: list[ConnectionRecord] = []
    errors: list[str] = []
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for i, log in enumerate(scope_logs.log_records):
                if log.event_name != EVENT_NAME:
                    continue
                fields = {kv.key: _plain(kv.value) for kv in log.attributes}
                fields["intervalStart"] = _from_nanos(log.observed_time_unix_nano)
                fields["intervalEnd"] = _from_nanos(log.time_unix_nano)
                try:
                    records.append(ConnectionRecord.model_validate(fields))
                except ValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first["loc"])
                    errors.append(f"log record {i}: field {where!r}: {first['msg']}")
    return records, errors
