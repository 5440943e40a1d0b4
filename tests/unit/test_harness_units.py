"""Pure parts of the harness: OTLP/JSON parsing, pins, the CI skip rule."""

from __future__ import annotations

import json

import pytest

from harness.collector import parse_metrics_line
from harness.prereq import missing
from harness.tools import pinned_versions


def test_parse_sum_and_histogram_points() -> None:
    line = json.dumps({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "k8s.node.name", "value": {"stringValue": "n1"}}]},
        "scopeMetrics": [{"metrics": [
            {"name": "conns", "sum": {"dataPoints": [
                {"attributes": [{"key": "server.port", "value": {"intValue": "80"}}],
                 "asInt": "7"}]}},
            {"name": "rtt", "histogram": {"dataPoints": [
                {"attributes": [], "count": "3", "sum": 1.5}]}},
        ]}]}]})
    conns, rtt = parse_metrics_line(line)
    assert (conns.name, conns.value, conns.attributes, conns.resource) == (
        "conns", 7.0, {"server.port": 80}, {"k8s.node.name": "n1"})
    assert rtt.kind == "histogram" and rtt.extra == {"count": "3", "sum": 1.5}


def test_every_tool_is_pinned() -> None:
    pins = pinned_versions()
    for key in ("KUBERNETES_VERSION", "ETCD_VERSION", "OTELCOL_VERSION", "HELM_VERSION"):
        assert pins.get(key), f"{key} missing from scripts/tool-versions.env"
    major, minor, patch = (int(x) for x in pins["ETCD_VERSION"].lstrip("v").split("."))
    assert (major, minor, patch) >= (3, 5, 13), "etcd < 3.5.13 breaks watch-list streaming"


def test_missing_prerequisite_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        missing("widget not installed")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="widget"):
        missing("widget not installed")
