"""The Helm chart (charts/traceprobe) rendered with the pinned helm, as a user would."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from harness.prereq import missing
from harness.tools import REPO, ToolMissing, pinned_versions, tool_path

CHART = REPO / "charts" / "traceprobe"
RELEASE, NAMESPACE = "traceprobe", "traceprobe-system"


def helm_path() -> Path:
    """The pinned helm binary, or the test stops (skip locally, failure under CI)."""
    try:
        return tool_path("helm")
    except ToolMissing as exc:
        missing(str(exc))


def kube_version() -> str:
    """Helm built from Go modules defaults to Kubernetes 1.20: name the one we test."""
    return pinned_versions()["KUBERNETES_VERSION"].lstrip("v")


def helm(*args: str, check: bool = True, kubeconfig: Path | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm_path()), *args]
    if kubeconfig is not None:
        cmd.append(f"--kubeconfig={kubeconfig}")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stderr}")
    return result


def _values_args(values: dict[str, Any] | None, sets: list[str] | None,
                 tmp: Path) -> list[str]:
    args: list[str] = []
    if values:
        path = tmp / "values.yaml"
        path.write_text(json.dumps(values))
        args += ["-f", str(path)]
    for item in sets or []:
        args += ["--set", item]
    return args


#: The Prometheus Operator's API, as a cluster serving its CRDs offers it.
MONITORING_API = "monitoring.coreos.com/v1"


def template(values: dict[str, Any] | None = None, sets: list[str] | None = None,
             release: str = RELEASE, namespace: str = NAMESPACE, crds: bool = False,
             check: bool = True,
             api_versions: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart; crds=True includes the chart's crds/ folder;
    `api_versions` are APIs the pretended cluster serves beyond the built-in ones."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["template", release, str(CHART), "--namespace", namespace,
                "--kube-version", kube_version(), *_values_args(values, sets, Path(tmp))]
        for api in api_versions:
            args += ["--api-versions", api]
        return helm(*args, *(["--include-crds"] if crds else []), check=check)


def render(values: dict[str, Any] | None = None, sets: list[str] | None = None,
           release: str = RELEASE, namespace: str = NAMESPACE,
           crds: bool = False, api_versions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The chart's objects as dicts (empty documents dropped)."""
    out = template(values, sets, release, namespace, crds, api_versions=api_versions).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def lint(values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return helm("lint", "--strict", str(CHART), *_values_args(values, None, Path(tmp)),
                    check=False)


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of `kind` (and `name`, when given) among `docs`."""
    hits = [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def container(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    spec = find(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = spec["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(container_spec: dict[str, Any]) -> dict[str, Any]:
    """Container env as name -> value (or the valueFrom dict)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_spec.get("env", [])}


def to_yaml(docs: list[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(doc, sort_keys=False) for doc in docs)


#: Every knob turned: another release and namespace, existing ServiceAccounts for
#: two components, export with headers and a CA, other ports, no test pod, agents
#: with their own tolerations, no priority class, other resources and rollout, and
#: metrics on the node's IP read by a Prometheus (monitors need the Prometheus
#: Operator's API: MONITORED adds them).
NON_DEFAULT: dict[str, Any] = {
    "fullnameOverride": "obs",
    "clusterName": "prod-eu-1",
    "image": {"repository": "registry.example.com:5000/tp/traceprobe", "tag": "0.1.0-rc1",
              "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "operator": {"replicas": 3, "detachTimeoutSeconds": 30, "reportStaleSeconds": 45,
                 "verbose": True,
                 "serviceAccount": {"create": False, "name": "platform-operator"},
                 "resources": {"requests": {"cpu": "10m"}, "limits": {"memory": "128Mi"}},
                 "podAnnotations": {"example.com/team": "platform"},
                 "nodeSelector": {"kubernetes.io/os": "linux"},
                 "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}]},
    "agent": {"image": {"repository": "registry.example.com:5000/tp/agent", "tag": "dev"},
              "serviceAccount": {"create": False, "name": "platform-agent"},
              "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "observability",
                               "effect": "NoSchedule"},
                              {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                               "effect": "NoExecute", "tolerationSeconds": 600}],
              "priorityClassName": "",
              "resources": {"requests": {"cpu": 0.2, "memory": "300Mi"},
                            "limits": {"cpu": 2, "memory": "1Gi"}},
              "updateStrategy": {"maxUnavailable": "20%"},
              "healthPort": 19465,
              "metrics": {"listen": "hostIP", "port": 19464,
                          "readers": [{"kind": "ServiceAccount", "name": "prometheus-k8s",
                                       "namespace": "monitoring"}],
                          "podMonitor": {"enabled": False, "interval": "30s",
                                         "tokenSecret": {"name": "", "key": "token"}}}},
    "serviceMap": {"ingestPort": 14317, "httpPort": 18080, "service": {"type": "NodePort"},
                   "ingestAuth": {"enabled": True, "audience": "obs-map", "certificateDays": 30,
                                  "certManager": {"enabled": False, "issuerRef": {
                                      "name": "", "kind": "Issuer"}}},
                   "networkPolicy": {
                       "enabled": True,
                       "viewFrom": [{"ipBlock": {"cidr": "10.0.0.0/28"}},
                                    {"namespaceSelector": {"matchLabels": {
                                        "kubernetes.io/metadata.name": "monitoring"}}}],
                       "ingestFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}]},
                   "export": {"endpoint": "https://otel.monitoring.svc:4318",
                              "protocol": "http/protobuf", "intervalSeconds": 30,
                              "serviceGraph": True,
                              "headersSecret": {"name": "otlp-auth", "key": "headers"},
                              "caSecret": {"name": "otlp-ca", "key": "ca.pem"}},
                   "extraArgs": ["--verbose"],
                   "extraEnv": [{"name": "OTEL_METRIC_EXPORT_INTERVAL", "value": "15000"}],
                   "serviceAccount": {"create": True, "name": "",
                                      "annotations": {"example.com/role": "map"}}},
    "tests": {"enabled": False},
}


#: NON_DEFAULT plus both Prometheus Operator monitors (render with MONITORING_API).
MONITORED: dict[str, Any] = {
    **NON_DEFAULT,
    "agent": {**NON_DEFAULT["agent"], "metrics": {
        **NON_DEFAULT["agent"]["metrics"],
        "podMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kps"},
                       "tokenSecret": {"name": "", "key": "token"}}}},
    "serviceMap": {**NON_DEFAULT["serviceMap"], "serviceMonitor": {
        "enabled": True, "interval": "1m", "labels": {"release": "kps"}}},
}
