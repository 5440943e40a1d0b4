"""TLS to the user's Collector with a test CA: a certificate from the CA the user
trusts is accepted; any other is refused by default, and the refusal is counted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.collector import Collector
from harness.pki import make_ca, server_cert
from harness.waiting import wait_until
from traceprobe_map.buckets import EdgeKey
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.export import CountingExporter, EdgeExporter, make_exporter
from traceprobe_map.peers import Peer


@pytest.fixture(scope="module")
def tls_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Collector, Path,
                                                                             Path]]:
    pki = tmp_path_factory.mktemp("pki")
    trusted = make_ca(pki, "trusted-ca")
    stranger = make_ca(pki, "stranger-ca")
    collector = Collector(pki / "collector", tls=server_cert(pki, trusted, "collector"))
    collector.start()
    yield collector, trusted, stranger
    collector.stop()


def _export(protocol: str, cluster: str) -> CountingExporter:
    counting = CountingExporter(make_exporter(protocol))
    exporter = EdgeExporter(counting, cluster, interval_seconds=3600)
    web, db = Peer("workload", "web", "shop", "Deployment"), Peer("workload", "db", "shop")
    exporter.record({EdgeKey(web, db, 5432, "tcp"): EdgeStats(connections=3)})
    exporter.flush(5000)
    exporter.shutdown()
    return counting


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("trust", ["trusted", "stranger", "system"])
def test_only_the_trusted_ca_gets_the_data(tls_collector: Any, monkeypatch: Any,
                                           protocol: str, trust: str) -> None:
    collector, trusted, stranger = tls_collector
    endpoint = collector.grpc_endpoint if protocol == "grpc" else \
        f"{collector.http_endpoint}/v1/metrics"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT" if protocol == "grpc"
                       else "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
    if trust != "system":  # "system": no CA given, only the OS trust store
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE",
                           str(trusted if trust == "trusted" else stranger))
    cluster = f"tls-{protocol.replace('/', '-')}-{trust}"
    counting = _export(protocol, cluster)

    def arrived() -> list[Any]:
        return [p for p in collector.metrics() if p.resource.get("k8s.cluster.name") == cluster]

    if trust == "trusted":
        assert counting.failed_exports == 0
        wait_until(arrived, timeout=10, what="the export at the collector")
        assert {p.value for p in arrived() if p.name == "traceprobe.edge.connections"} == {3.0}
    else:
        assert counting.failed_exports >= 1 and counting.failed_points >= 1
        time.sleep(0.5)  # the collector's file flush interval is 100 ms
        assert not arrived()
