"""What the chart makes for the map's two doors: the ingest's certificate and the
agents' credentials for it, and the NetworkPolicy in front of both ports."""

from __future__ import annotations

import base64
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from harness.chart import MONITORING_API, NON_DEFAULT, container, env_of, find, render, template


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def custom() -> list[dict[str, Any]]:
    return render(NON_DEFAULT, release="obs", namespace="observability")


def _certificate_names(pem: bytes) -> str:
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem,
                          capture_output=True, check=True).stdout.decode()
    return text.splitlines()[-1].strip()


def test_the_ingest_gets_a_certificate_for_its_service_and_agents_only_its_ca(
        default: list[dict[str, Any]]) -> None:
    secret = find(default, "Secret", "traceprobe-service-map-tls")
    assert secret["type"] == "kubernetes.io/tls"
    pem = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert set(pem) == {"ca.crt", "tls.crt", "tls.key"}
    ingest = "traceprobe-service-map-ingest"
    assert _certificate_names(pem["tls.crt"]) == ", ".join(
        f"DNS:{ingest}{suffix}" for suffix in (
            "", ".traceprobe-system", ".traceprobe-system.svc",
            ".traceprobe-system.svc.cluster.local"))
    with tempfile.TemporaryDirectory() as tmp:  # the CA in the Secret signed it
        (Path(tmp) / "ca.crt").write_bytes(pem["ca.crt"])
        (Path(tmp) / "tls.crt").write_bytes(pem["tls.crt"])
        subprocess.run(["openssl", "verify", "-CAfile", "ca.crt", "tls.crt"], cwd=tmp,
                       check=True, capture_output=True)
    pod = find(default, "Deployment", "traceprobe-service-map")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "ingest-tls")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert [i["key"] for i in volume["secret"]["items"]] == ["tls.crt", "tls.key"]
    # The operator hands agents the Secret's name; it mounts ca.crt alone.
    env = env_of(container(default, "traceprobe-operator"))
    assert env["TRACEPROBE_MAP_CA_SECRET"] == secret["metadata"]["name"]
    rules = find(default, "ClusterRole", "traceprobe-service-map")["rules"]
    assert {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
            "verbs": ["create"]} in rules


def test_ingest_auth_off_is_plaintext_with_nothing_left_over() -> None:
    docs = render(sets=["serviceMap.ingestAuth.enabled=false"])
    assert not [d for d in docs if d["kind"] == "Secret"]
    args = container(docs, "traceprobe-service-map")["args"]
    assert not [a for a in args if "tls" in a or "account" in a or "audience" in a]
    env = env_of(container(docs, "traceprobe-operator"))
    assert "TRACEPROBE_MAP_CA_SECRET" not in env and "TRACEPROBE_MAP_TOKEN_AUDIENCE" not in env
    rules = find(docs, "ClusterRole", "traceprobe-service-map")["rules"]
    assert not [r for r in rules if "tokenreviews" in r["resources"]]


def test_cert_manager_issues_the_ingest_certificate_when_asked() -> None:
    docs = render(sets=["serviceMap.ingestAuth.certManager.enabled=true",
                        "serviceMap.ingestAuth.certManager.issuerRef.name=cluster-ca",
                        "serviceMap.ingestAuth.certManager.issuerRef.kind=ClusterIssuer"],
                  api_versions=("cert-manager.io/v1",))
    assert not [d for d in docs if d["kind"] == "Secret"]
    cert = find(docs, "Certificate", "traceprobe-service-map-tls")
    assert cert["spec"]["secretName"] == "traceprobe-service-map-tls"
    assert cert["spec"]["issuerRef"] == {"name": "cluster-ca", "kind": "ClusterIssuer",
                                         "group": "cert-manager.io"}
    assert "traceprobe-service-map-ingest.traceprobe-system.svc" in cert["spec"]["dnsNames"]


def test_the_network_policy_opens_each_port_to_its_own_clients(
        default: list[dict[str, Any]], custom: list[dict[str, Any]]) -> None:
    policy = find(default, "NetworkPolicy")["spec"]
    pods = find(default, "Deployment", "traceprobe-service-map")["spec"]["template"]
    assert policy["podSelector"]["matchLabels"].items() <= pods["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    ingest, view = policy["ingress"]
    assert ingest == {"ports": [{"port": "ingest", "protocol": "TCP"}]}  # every source
    assert view["ports"] == [{"port": "http", "protocol": "TCP"}]
    (test_pod,) = view["from"]  # besides the node itself, only the chart's test pod
    assert test_pod["podSelector"]["matchLabels"].items() <= (
        find(default, "Pod")["metadata"]["labels"].items())
    custom_ingest, custom_view = find(custom, "NetworkPolicy")["spec"]["ingress"]
    wanted = NON_DEFAULT["serviceMap"]["networkPolicy"]
    assert custom_ingest["from"] == wanted["ingestFrom"]
    assert custom_view["from"][1:] == wanted["viewFrom"]
    assert not [d for d in render(sets=["serviceMap.networkPolicy.enabled=false"])
                if d["kind"] == "NetworkPolicy"]


def test_a_service_monitor_behind_the_network_policy_needs_its_prometheus_admitted() -> None:
    result = template(sets=["serviceMap.serviceMonitor.enabled=true"], check=False,
                      api_versions=(MONITORING_API,))
    assert result.returncode != 0
    assert "needs serviceMap.networkPolicy.viewFrom to admit your Prometheus" in result.stderr
