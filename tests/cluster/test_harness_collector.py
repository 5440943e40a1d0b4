"""The collector is real: metrics sent with opentelemetry-sdk arrive, over gRPC and HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource


def _exporter(protocol: str, collector: Any) -> Any:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=collector.grpc_endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter(endpoint=f"{collector.http_endpoint}/v1/metrics")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_metric_arrives(collector: Any, protocol: str) -> None:
    run = uuid.uuid4().hex
    reader = PeriodicExportingMetricReader(_exporter(protocol, collector),
                                           export_interval_millis=60_000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create(
        {"service.name": "harness-self-test", "k8s.node.name": "node-1"}))
    counter = provider.get_meter("harness").create_counter("harness.selftest.count")
    counter.add(3, {"run": run, "protocol": protocol})
    counter.add(4, {"run": run, "protocol": protocol})
    provider.force_flush()
    provider.shutdown()

    points = collector.wait_for("harness.selftest.count", run=run)
    # Cumulative temporality: every export (flush, then shutdown) carries the total.
    assert {p.value for p in points} == {7.0}
    assert points[0].resource["k8s.node.name"] == "node-1"
    assert collector.find("harness.selftest.count", run="someone-else") == []
