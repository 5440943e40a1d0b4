"""What the map's OTLP resource says about it: its service name from the standard
variables when they give one, else its own; the cluster and an instance id always."""

from __future__ import annotations

import io

import pytest
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

from traceprobe_map.export import EdgeExporter


@pytest.mark.parametrize(("env", "name"), [
    ({}, "traceprobe-service-map"),
    ({"OTEL_SERVICE_NAME": "netmap-eu"}, "netmap-eu"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,team=net"}, "from-attrs"),
])
def test_the_resource_takes_the_service_name_the_environment_gives(
        env: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    exporter = EdgeExporter(ConsoleMetricExporter(out=io.StringIO()), "c", interval_seconds=3600)
    try:
        attributes = exporter.resource.attributes
        assert attributes["service.name"] == name and attributes["k8s.cluster.name"] == "c"
        assert attributes["service.instance.id"]
    finally:
        exporter.shutdown()
