"""The chart agrees with the rest of the repository: no two copies drift apart.

CRDs are copied from crds/ (generated) and operator/deploy/kopf-peering.yaml;
RBAC rules equal operator/deploy/rbac.yaml, node_agent/deploy/rbac.yaml and
service_map/deploy/rbac.yaml (the files the tests run the components with);
versions and names match the package.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.chart import CHART, find, render
from harness.tools import REPO

COPY_HINT = "refresh the chart: cp crds/*.yaml charts/traceprobe/crds/"
READ = ["get", "list", "watch"]


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def secured() -> list[dict[str, Any]]:
    """Agent metrics beyond loopback: the agents' RBAC grows by the token reviews."""
    return render(sets=["agent.metrics.listen=hostIP"])


#: Objects of node_agent/deploy/rbac.yaml that the chart renders only with
#: agent.metrics.listen hostIP or all.
METRICS_AUTH = "traceprobe-agent-metrics-auth"


def test_chart_crds_equal_the_generated_ones() -> None:
    chart = {p.name for p in (CHART / "crds").glob("*.yaml")}
    generated = {p.name for p in (REPO / "crds").glob("*.yaml")}
    assert generated <= chart, f"missing in the chart: {generated - chart}; {COPY_HINT}"
    for name in generated:
        assert (CHART / "crds" / name).read_text() == (REPO / "crds" / name).read_text(), (
            f"charts/traceprobe/crds/{name} drifted from crds/{name}; {COPY_HINT}")


def test_chart_ships_kopf_peering_crds() -> None:
    chart = _docs(CHART / "crds" / "kopf.dev_peerings.yaml")
    assert chart == _docs(REPO / "operator/deploy/kopf-peering.yaml"), (
        "cp operator/deploy/kopf-peering.yaml charts/traceprobe/crds/kopf.dev_peerings.yaml")
    extra = {p.name for p in (CHART / "crds").glob("*")} - {
        p.name for p in (REPO / "crds").glob("*.yaml")} - {"kopf.dev_peerings.yaml"}
    assert not extra, f"unexpected files in the chart's crds/: {extra}"


@pytest.mark.parametrize("source,kind,name", [
    ("operator/deploy/rbac.yaml", "ClusterRole", "traceprobe-operator"),
    ("operator/deploy/rbac.yaml", "Role", "traceprobe-operator"),
    ("node_agent/deploy/rbac.yaml", "ClusterRole", "traceprobe-agent"),
    ("node_agent/deploy/rbac.yaml", "ClusterRole", METRICS_AUTH),
    ("service_map/deploy/rbac.yaml", "ClusterRole", "traceprobe-service-map"),
])
def test_chart_rbac_equals_the_rbac_the_tests_run_with(
        secured: list[dict[str, Any]], source: str, kind: str, name: str) -> None:
    want = find(_docs(REPO / source), kind, name)["rules"]
    assert find(secured, kind, name)["rules"] == want, f"chart {kind} {name} != {source}"


@pytest.mark.parametrize("source", ["operator/deploy/rbac.yaml", "node_agent/deploy/rbac.yaml",
                                    "service_map/deploy/rbac.yaml",
                                    "operator/deploy/kopf-peering-object.yaml"])
def test_chart_objects_match_the_deploy_files_with_default_values(
        default: list[dict[str, Any]], secured: list[dict[str, Any]], source: str) -> None:
    """Same objects, names and bindings as the files (default release and namespace;
    the metrics-auth objects as rendered with agent metrics beyond loopback)."""
    for doc in _docs(REPO / source):
        name = doc["metadata"]["name"]
        ours = find(secured if name == METRICS_AUTH else default, doc["kind"], name)
        assert ours["metadata"].get("namespace") == doc["metadata"].get("namespace")
        for key in ("rules", "roleRef", "subjects"):
            assert ours.get(key) == doc.get(key), (doc["kind"], name, key)


def test_agent_rbac_grows_only_by_token_reviews_and_only_beyond_loopback(
        default: list[dict[str, Any]], secured: list[dict[str, Any]]) -> None:
    assert not [d for d in default if d["metadata"]["name"] == METRICS_AUTH]
    assert find(secured, "ClusterRole", "traceprobe-agent") == find(
        default, "ClusterRole", "traceprobe-agent")
    rules = find(secured, "ClusterRole", METRICS_AUTH)["rules"]
    assert rules == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
         "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
         "verbs": ["create"]}]
    binding = find(secured, "ClusterRoleBinding", METRICS_AUTH)
    assert binding["subjects"] == find(default, "ClusterRoleBinding",
                                       "traceprobe-agent")["subjects"]
    reader = find(secured, "ClusterRole", "traceprobe-metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    # Nobody is bound to it unless asked: agent.metrics.readers or the PodMonitor's scraper.
    assert not [d for d in secured if d["kind"] == "ClusterRoleBinding"
                and d["metadata"]["name"] == "traceprobe-metrics-reader"]


def test_service_map_rbac_is_read_only_and_minimal(default: list[dict[str, Any]]) -> None:
    rules = find(default, "ClusterRole", "traceprobe-service-map")["rules"]
    granted = {(g, r): rule["verbs"] for rule in rules
               for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {
        ("", "pods"): READ, ("", "services"): READ, ("", "nodes"): READ,
        ("", "namespaces"): READ, ("discovery.k8s.io", "endpointslices"): READ,
        ("apps", "replicasets"): READ, ("batch", "jobs"): READ,
        ("traceprobe.io", "traceprobes"): READ, ("traceprobe.io", "clustertraceprobes"): READ,
        # Checking the tokens agents send with their reports; nothing else is written.
        ("authentication.k8s.io", "tokenreviews"): ["create"],
    }
    assert not [d for d in default if d["kind"] in ("Role", "RoleBinding")
                and "service-map" in d["metadata"]["name"]]


@pytest.mark.parametrize("which", ["default", "secured"])
def test_no_rbac_grants_wildcards_or_secrets(which: str, request: Any) -> None:
    for doc in request.getfixturevalue(which):
        for rule in doc.get("rules", []) if doc["kind"] in ("Role", "ClusterRole") else []:
            for field in ("apiGroups", "resources", "verbs", "nonResourceURLs"):
                assert "*" not in rule.get(field, []), (doc["metadata"]["name"], rule)
            # No component reads Secrets through the API: the kubelet hands the map its own.
            assert "secrets" not in rule.get("resources", []), (doc["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_peering_object_is_the_one_the_operator_uses(default: list[dict[str, Any]]) -> None:
    handlers = (REPO / "operator/traceprobe_operator/handlers.py").read_text()
    name = re.search(r'settings\.peering\.name = "([^"]+)"', handlers)
    assert name, "operator no longer sets its peering name in handlers.configure"
    assert find(default, "ClusterKopfPeering")["metadata"]["name"] == name.group(1)


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "traceprobe"
