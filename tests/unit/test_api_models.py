"""The shared API models: defaults, wire names, and the Python mirrors of the CEL rules."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_api.meta import LabelSelector, LabelSelectorRequirement, parse_duration
from traceprobe_api.node_report import NodeReport, NodeReportStatus, ProbeRef
from traceprobe_api.probe import (
    DEFAULT_PROBES,
    ClusterTraceProbeSpec,
    Probe,
    TraceProbe,
    TraceProbeSpec,
    TraceProbeStatus,
)
from traceprobe_api.resources import BY_KIND, parse

CONDITION = {"type": "Ready", "status": "True", "reason": "AllNodesReady", "message": "",
             "lastTransitionTime": "2025-01-01T00:00:00Z"}


def test_spec_defaults_match_the_design() -> None:
    spec = TraceProbeSpec()
    assert spec.probes == DEFAULT_PROBES and Probe.UDP not in spec.probes
    assert spec.interval == "10s" and spec.node_selector is None
    assert spec.limits.max_connections == 65536
    assert spec.to_dict() == {
        "probes": ["connections", "failures", "bytes", "retransmits", "rtt", "dns"],
        "podSelector": {}, "interval": "10s",
        "limits": {"maxConnections": 65536}}
    assert ClusterTraceProbeSpec().to_dict()["namespaceSelector"] == {}


def test_camel_case_on_the_wire_snake_case_in_python() -> None:
    by_alias = TraceProbeSpec.model_validate({"limits": {"maxConnections": 2048}})
    by_name = TraceProbeSpec.model_validate({"limits": {"max_connections": 2048}})
    assert by_alias == by_name and by_alias.limits.max_connections == 2048
    assert "maxConnections" in by_alias.to_dict()["limits"]


def test_group_version_and_kinds() -> None:
    assert TraceProbe().api_version == f"{API_GROUP}/{API_VERSION}"
    assert sorted(BY_KIND) == ["ClusterTraceProbe", "NodeReport", "TraceProbe"]
    with pytest.raises(ValueError, match="not one of"):
        parse({"kind": "Pod"})


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("2m0s", 120)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["10", "1.5s", "-1s", "10 s", "1d", ""])
def test_parse_duration_refuses_what_the_pattern_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("interval", "ok"), [
    ("1s", True), ("5m", True), ("4m59s", True), ("999ms", False), ("5m1s", False)])
def test_interval_bounds(interval: str, ok: bool) -> None:
    if ok:
        TraceProbeSpec(interval=interval)
    else:
        with pytest.raises(ValidationError, match="interval must be between 1s and 5m"):
            TraceProbeSpec(interval=interval)


@pytest.mark.parametrize(("requirement", "error"), [
    ({"key": "app", "operator": "In", "values": ["a"]}, None),
    ({"key": "app", "operator": "NotIn", "values": []}, "non-empty when operator is In"),
    ({"key": "app", "operator": "In"}, "non-empty when operator is In"),
    ({"key": "app", "operator": "Exists"}, None),
    ({"key": "app", "operator": "DoesNotExist", "values": []}, None),
    ({"key": "app", "operator": "Exists", "values": ["a"]}, "empty when operator is Exists"),
    ({"key": "example.com/tier", "operator": "Exists"}, None),
    ({"key": "Bad_Prefix/tier", "operator": "Exists"}, "should match pattern"),
])
def test_selector_requirement_rules(requirement: dict[str, Any], error: str | None) -> None:
    if error is None:
        LabelSelectorRequirement.model_validate(requirement)
    else:
        with pytest.raises(ValidationError, match=error):
            LabelSelectorRequirement.model_validate(requirement)


@pytest.mark.parametrize(("labels", "ok"), [
    ({"app": "shop", "app.kubernetes.io/name": "shop", "empty": ""}, True),
    ({"-app": "shop"}, False), ({"a/b/c": "x"}, False), ({"x" * 64: "v"}, False),
    ({"app": "shop frontend"}, False), ({"app": "v" * 64}, False),
])
def test_label_maps(labels: dict[str, str], ok: bool) -> None:
    if ok:
        LabelSelector(match_labels=labels)
    else:
        with pytest.raises(ValidationError):
            LabelSelector(match_labels=labels)


def test_export_is_no_probe_field() -> None:
    # Export is cluster-wide (the service map's): nothing exported per probe, so a
    # probe's `export` is refused rather than accepted and ignored.
    for spec in (TraceProbeSpec, ClusterTraceProbeSpec):
        assert "export" not in spec.model_fields
        with pytest.raises(ValidationError, match=r"export\n  Extra inputs are not permitted"):
            spec.model_validate({"export": {"endpoint": "https://otlp.example.com:4317"}})


def test_probes_are_a_non_empty_set() -> None:
    with pytest.raises(ValidationError, match="Duplicate value: 'rtt'"):
        TraceProbeSpec.model_validate({"probes": ["rtt", "rtt"]})
    with pytest.raises(ValidationError, match="at least 1"):
        TraceProbeSpec.model_validate({"probes": []})


def test_spec_refuses_unknown_fields_status_ignores_them() -> None:
    # kubectl's strict field validation refuses typos in a spec; a reader of a
    # status written by a newer component must not choke on a field it lacks.
    with pytest.raises(ValidationError, match="Extra inputs"):
        TraceProbeSpec.model_validate({"intervall": "10s"})
    status = TraceProbeStatus.model_validate({"observedGeneration": 2, "fromTheFuture": 1})
    assert status.observed_generation == 2


def test_conditions_follow_metav1_condition() -> None:
    TraceProbeStatus.model_validate({"conditions": [CONDITION]})
    for bad in ({"reason": "not camel case"}, {"status": "Yes"}, {"lastTransitionTime": "x"}):
        with pytest.raises(ValidationError):
            TraceProbeStatus.model_validate({"conditions": [{**CONDITION, **bad}]})
    with pytest.raises(ValidationError, match="Duplicate value: 'type=Ready'"):
        TraceProbeStatus.model_validate({"conditions": [CONDITION, CONDITION]})


def test_probe_ref_namespace_matches_kind() -> None:
    ProbeRef.model_validate({"kind": "TraceProbe", "namespace": "shop", "name": "a",
                             "generation": 1})
    ProbeRef.model_validate({"kind": "ClusterTraceProbe", "name": "a", "generation": 1})
    for bad in ({"kind": "TraceProbe", "name": "a", "generation": 1},
                {"kind": "ClusterTraceProbe", "namespace": "x", "name": "a", "generation": 1}):
        with pytest.raises(ValidationError, match="namespace is required for a TraceProbe"):
            ProbeRef.model_validate(bad)


def test_node_report_is_named_after_its_node() -> None:
    NodeReport.model_validate({"metadata": {"name": "n1"}, "spec": {"nodeName": "n1"}})
    with pytest.raises(ValidationError, match=r"must equal spec\.nodeName"):
        NodeReport.model_validate({"metadata": {"name": "n1"}, "spec": {"nodeName": "n2"}})


def test_node_report_status_map_usage_and_drops() -> None:
    entry = {"probe": {"kind": "ClusterTraceProbe", "name": "a", "generation": 1},
             "state": "Attached", "mapUsage": [{"name": "conns", "entries": 5, "capacity": 4}]}
    with pytest.raises(ValidationError, match="entries cannot exceed capacity"):
        NodeReportStatus.model_validate({"probes": [entry]})
    with pytest.raises(ValidationError):
        NodeReportStatus.model_validate({"probes": [{**entry, "mapUsage": [],
                                                     "drops": {"mapFull": -1}}]})


def test_api_package_imports_neither_side_nor_kubernetes() -> None:
    code = ("import sys, traceprobe_api.crd_schema, traceprobe_api.resources; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('kubernetes', 'kopf', 'bcc', 'traceprobe_operator', 'traceprobe_agent')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_replaced_record_equals_a_validated_copy() -> None:
    from datetime import UTC, datetime

    from traceprobe_api.records import ConnectionRecord, Role

    t = datetime(2026, 1, 1, tzinfo=UTC)
    base = ConnectionRecord(node="n", role=Role.CLIENT, transport="tcp", family="ipv4",
                            interval_start=t, interval_end=t, opened=2)
    fast = base.replaced(k8s_namespace="shop", k8s_workload="web")
    slow = base.model_copy(update={"k8s_namespace": "shop", "k8s_workload": "web"})
    assert fast == slow and fast.to_dict() == slow.to_dict()
    assert base.k8s_namespace is None  # the original is untouched
    assert fast.model_fields_set == slow.model_fields_set
