"""Property-based fuzzing (hypothesis) of what users and peers hand us: probe specs,
agents' OTLP reports, map queries, and API objects as watches deliver them.
Each must end in a value or a clear, named error — never an unexpected exception."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from traceprobe_api.record_otlp import EVENT_NAME, decode
from traceprobe_api.records import ConnectionRecord
from traceprobe_map.metadata import MetadataCache
from traceprobe_map.peers import Resolver
from traceprobe_map.views import QueryError, parse_query
from traceprobe_operator.validation import spec_problem

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=True), st.text(max_size=30))
json_like = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)
SPEC_KEYS = ["probes", "podSelector", "nodeSelector", "interval", "limits",
             "namespaceSelector", "hostProcesses", "matchLabels", "matchExpressions", "key",
             "operator", "values", "maxConnections"]
specs = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(SPEC_KEYS) | st.text(max_size=8), inner, max_size=5)),
    max_leaves=25)


@FUZZ
@given(kind=st.sampled_from(["TraceProbe", "ClusterTraceProbe"]), spec=specs)
def test_probe_validation_names_a_problem_or_accepts(kind: str, spec: Any) -> None:
    body = {"apiVersion": "traceprobe.io/v1alpha1", "kind": kind,
            "metadata": {"name": "p", "namespace": "shop"}, "spec": spec}
    problem = spec_problem(kind, body)
    assert problem is None or (isinstance(problem, str) and problem.strip())


any_values = st.one_of(
    st.builds(lambda v: AnyValue(string_value=v), st.text(max_size=40)),
    st.builds(lambda v: AnyValue(int_value=v), st.integers(-2**63, 2**63 - 1)),
    st.builds(lambda v: AnyValue(double_value=v), st.floats()),
    st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
    st.just(AnyValue()))
FIELDS = ["node", "role", "transport", "family", "remoteIp", "remotePort", "localPort",
          "opened", "bytesSent", "k8sNamespace", "k8sWorkload", "backends", "pid", "comm"]
FIELDS += ["intervalStart", "intervalEnd"]
bodies = st.one_of(
    st.builds(lambda d: AnyValue(string_value=json.dumps(d)),
              st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_like,
                              max_size=14)),
    st.builds(lambda t: AnyValue(string_value=t), st.text(max_size=60)),
    any_values)
log_records = st.builds(
    lambda body, ours: LogRecord(event_name=EVENT_NAME if ours else "other", body=body),
    bodies, st.booleans())


@FUZZ
@given(st.lists(log_records, max_size=6))
def test_agent_reports_decode_to_records_or_named_errors(logs: list[LogRecord]) -> None:
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        scope_logs=[ScopeLogs(log_records=logs)])])
    records, errors = decode(request)
    ours = sum(1 for log in logs if log.event_name == EVENT_NAME)
    assert len(records) + len(errors) == ours
    assert all(isinstance(r, ConnectionRecord) for r in records)
    assert all(e.startswith("log record ") for e in errors)


@FUZZ
@given(st.binary(max_size=300))
def test_garbage_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        request = ExportLogsServiceRequest.FromString(data)
    except Exception:  # not a protobuf at all: gRPC refuses it before we see it
        return
    decode(request)


@FUZZ
@given(st.dictionaries(st.sampled_from(["namespace", "probe", "minRate", "search", "window"])
                       | st.text(max_size=8), st.lists(st.text(max_size=12), max_size=3),
                       max_size=5))
def test_map_queries_parse_or_are_refused_by_name(params: dict[str, list[str]]) -> None:
    try:
        parse_query(params)
    except QueryError as exc:
        assert str(exc).strip()


objects = st.dictionaries(st.sampled_from(["metadata", "spec", "status", "endpoints"]),
                          json_like, max_size=4)


@FUZZ
@given(event=st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), obj=objects)
def test_odd_api_objects_are_skipped_not_fatal(event: str, obj: dict[str, Any]) -> None:
    cache = MetadataCache(Resolver())
    for handle in (lambda: cache.pod(event, obj, 1.0), lambda: cache.service(event, obj, 1.0),
                   lambda: cache.node(event, obj, 1.0), lambda: cache.endpoint_slice(event, obj),
                   lambda: cache.namespace(event, obj), lambda: cache.owner(event, obj, "Job"),
                   lambda: cache.probe(event, obj, "TraceProbe")):
        cache.safely(handle)
