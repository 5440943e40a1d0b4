"""values.yaml, values.schema.json and `helm lint`: good values pass, bad ones are
refused with a message naming the value."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from harness.chart import CHART, NON_DEFAULT, lint, template

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def _keys(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every mapping key in values.yaml."""
    if not isinstance(values, dict):
        return []
    out: list[str] = []
    for key, value in values.items():
        out.append(prefix + key)
        out += _keys(value, f"{prefix}{key}.")
    return out


@pytest.mark.parametrize("values", [None, NON_DEFAULT], ids=["default", "non-default"])
def test_helm_lint_strict(values: dict[str, Any] | None) -> None:
    result = lint(values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_values_keys_are_camel_case_documented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = _schema()
    defs = schema["definitions"]
    lines = text.splitlines()
    for path in _keys(values):
        leaf = path.rsplit(".", 1)[-1]
        if leaf in ("requests", "limits", "cpu", "memory"):  # Kubernetes' own names
            continue
        assert CAMEL.match(leaf), f"values key {path} is not camelCase"
        node: dict[str, Any] = schema
        for part in path.split("."):
            if "$ref" in node:
                node = defs[node["$ref"].rsplit("/", 1)[-1]]
            assert part in node.get("properties", {}), f"{path} missing from values.schema.json"
            node = node["properties"][part]
    # Every key has a comment right above it (Kubernetes' own resource names aside).
    for number, line in enumerate(lines[1:], start=2):
        key = re.match(r"^\s*([a-zA-Z]+):", line)
        if key and key.group(1) not in ("requests", "limits"):
            assert lines[number - 2].strip().startswith("#"), (
                f"values.yaml line {number} ({line.strip()}) has no comment above it")


def test_objects_in_the_schema_refuse_unknown_keys() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, where
            for key, value in node.items():
                walk(value, f"{where}/{key}")
    walk(_schema(), "#")


#: (--set arguments, what the error must say): the schema names the value, the
#: template checks (templates/_helpers.tpl "traceprobe.validate") say what to do.
BAD_VALUES = [
    (["operator.replicas=0"], "/operator/replicas': minimum: got 0, want 1"),
    (["operator.replicas=two"], "/operator/replicas': got string, want integer"),
    (["serviceMap.export.protocol=udp"], "/serviceMap/export/protocol': value must be one of"),
    (["serviceMap.export.endpoint=otel-collector:4317"],
     "/serviceMap/export/endpoint': 'otel-collector:4317' does not match"),
    (["serviceMap.export.endpoint=https://otel.monitoring:99999"],
     "/serviceMap/export/endpoint': 'https://otel.monitoring:99999' does not match"),
    (["serviceMap.export.endpoint=https://user:pw@otel.monitoring:4317"],
     "does not match"),
    (["serviceMap.ingestPort=70000"], "/serviceMap/ingestPort': maximum"),
    (["image.pullPolicy=Sometimes"], "/image/pullPolicy': value must be one of"),
    (["clusterName=my cluster"], "/clusterName'"),
    (["agent.image.repository="], "/agent/image/repository'"),
    (["operator.serviceAccount.name=Platform_Operator"], "/operator/serviceAccount/name'"),
    (["serviceMap.replicas=2"], "additional properties 'replicas' not allowed"),
    (["operater.replicas=2"], "additional properties 'operater' not allowed"),
    (["serviceMap.service.type=ExternalName"], "/serviceMap/service/type'"),
    (["serviceMap.export.headersSecret.name=otlp-auth",
      "serviceMap.export.endpoint=http://otel.monitoring:4317"],
     "serviceMap.export.headersSecret needs an https:// serviceMap.export.endpoint"),
    (["serviceMap.export.caSecret.name=otlp-ca"],
     "serviceMap.export.caSecret needs an https:// serviceMap.export.endpoint"),
    (["serviceMap.httpPort=4317"], "serviceMap.ingestPort and serviceMap.httpPort must differ"),
    (["agent.tolerations[0].operator=Exists", "agent.tolerations[0].effect=NoScheduling"],
     "/agent/tolerations/0/effect': value must be one of"),
    (["agent.priorityClassName=Node_Critical"], "/agent/priorityClassName'"),
    (["agent.resources.limits.memory=half"], "/agent/resources/limits/memory'"),
    (["agent.resources.claims[0].name=gpu"], "additional properties 'claims' not allowed"),
    (["agent.updateStrategy.maxUnavailable=0"], "/agent/updateStrategy/maxUnavailable'"),
    (["agent.updateStrategy.maxUnavailable=150%"], "/agent/updateStrategy/maxUnavailable'"),
    (["agent.metrics.listen=0.0.0.0"], "/agent/metrics/listen': value must be one of"),
    (["agent.healthPort=9464"], "agent.healthPort and agent.metrics.port must differ"),
    (["agent.metrics.podMonitor.enabled=true"],
     "agent.metrics.podMonitor.enabled needs agent.metrics.listen hostIP or all"),
    (["agent.metrics.listen=hostIP", "agent.metrics.podMonitor.enabled=true"],
     "agent.metrics.podMonitor.enabled needs the monitoring.coreos.com/v1 API"),
    (["serviceMap.serviceMonitor.enabled=true"],
     "serviceMap.serviceMonitor.enabled needs the monitoring.coreos.com/v1 API"),
    (["serviceMap.networkPolicy.viewFrom[0].ipBlock.except[0]=10.0.0.1/32"],
     "/serviceMap/networkPolicy/viewFrom/0/ipBlock': missing property 'cidr'"),
    (["serviceMap.networkPolicy.ingestFrom[0].nodeSelector.a=b"],
     "additional properties 'nodeSelector' not allowed"),
    (["serviceMap.ingestAuth.audience=a b"], "/serviceMap/ingestAuth/audience'"),
    (["serviceMap.ingestAuth.certificateDays=0"], "/serviceMap/ingestAuth/certificateDays'"),
    (["serviceMap.ingestAuth.certManager.issuerRef.kind=Vault"],
     "/serviceMap/ingestAuth/certManager/issuerRef/kind'"),
    (["serviceMap.ingestAuth.certManager.enabled=true"],
     "serviceMap.ingestAuth.certManager.enabled needs serviceMap.ingestAuth.certManager"
     ".issuerRef.name"),
    (["serviceMap.ingestAuth.certManager.enabled=true",
      "serviceMap.ingestAuth.certManager.issuerRef.name=ca", "serviceMap.ingestAuth.enabled=true"],
     "serviceMap.ingestAuth.certManager.enabled needs the cert-manager.io/v1 API"),
    (["serviceMap.ingestAuth.certManager.enabled=true",
      "serviceMap.ingestAuth.certManager.issuerRef.name=ca", "serviceMap.ingestAuth.enabled=false"],
     "serviceMap.ingestAuth.certManager.enabled needs serviceMap.ingestAuth.enabled"),
    (["agent.metrics.podMonitor.interval=30"], "/agent/metrics/podMonitor/interval'"),
    (["agent.metrics.readers[0].kind=ServiceAccount", "agent.metrics.readers[0].name=prom"],
     "/agent/metrics/readers/0': missing property 'namespace'"),
    (["agent.metrics.readers[0].kind=Group", "agent.metrics.readers[0].name=ops"],
     "agent.metrics.readers needs agent.metrics.listen hostIP or all"),
]


@pytest.mark.parametrize("sets,message", BAD_VALUES, ids=[s[-1] for s, _ in BAD_VALUES])
def test_bad_values_are_refused_naming_the_value(sets: list[str], message: str) -> None:
    result = template(sets=sets, check=False)
    assert result.returncode != 0, f"helm template accepted {sets}"
    assert message in result.stderr, result.stderr
