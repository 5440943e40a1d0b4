"""What `helm template` makes of charts/traceprobe, with default and non-default values."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.chart import (
    MONITORED,
    MONITORING_API,
    NON_DEFAULT,
    container,
    env_of,
    find,
    render,
)
from traceprobe_operator import settings as operator_settings
from traceprobe_operator.agent_workload import ActiveProbe, render_daemonset
from traceprobe_operator.settings import AgentPodSettings, OperatorSettings

LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
          "app.kubernetes.io/component", "app.kubernetes.io/part-of",
          "app.kubernetes.io/managed-by", "helm.sh/chart")


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def custom() -> list[dict[str, Any]]:
    return render(NON_DEFAULT, release="obs", namespace="observability")


def _pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    return specs + [d["spec"] for d in docs if d["kind"] == "Pod"]


def test_default_objects(default: list[dict[str, Any]]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in default)
    assert kinds == sorted([
        ("ServiceAccount", "traceprobe-operator"), ("ServiceAccount", "traceprobe-agent"),
        ("ServiceAccount", "traceprobe-service-map"),
        ("ClusterRole", "traceprobe-operator"), ("ClusterRole", "traceprobe-agent"),
        ("ClusterRole", "traceprobe-service-map"),
        ("ClusterRoleBinding", "traceprobe-operator"), ("ClusterRoleBinding", "traceprobe-agent"),
        ("ClusterRoleBinding", "traceprobe-service-map"),
        ("Role", "traceprobe-operator"), ("RoleBinding", "traceprobe-operator"),
        ("Deployment", "traceprobe-operator"), ("Deployment", "traceprobe-service-map"),
        ("Service", "traceprobe-service-map"), ("Service", "traceprobe-service-map-ingest"),
        ("NetworkPolicy", "traceprobe-service-map"), ("Secret", "traceprobe-service-map-tls"),
        ("ClusterKopfPeering", "traceprobe"), ("Pod", "traceprobe-test-service-map"),
    ])
    # The operator owns the agent DaemonSet; the chart must not render a second one.
    assert not [d for d in default if d["kind"] == "DaemonSet"]


@pytest.mark.parametrize("which", ["default", "custom"])
def test_every_object_and_pod_carries_the_standard_labels(which: str, request: Any) -> None:
    docs = request.getfixturevalue(which)
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        assert set(LABELS) <= labels.keys(), (doc["kind"], doc["metadata"]["name"], labels)
        assert labels["app.kubernetes.io/part-of"] == "traceprobe"
    for doc in docs:
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert set(LABELS) <= pod_labels.keys()
            assert selector.items() <= pod_labels.items()
            assert "app.kubernetes.io/version" not in selector  # selectors are immutable
    if which == "default":
        pods = find(docs, "Deployment", "traceprobe-service-map")["spec"]["template"]
        for name in ("traceprobe-service-map", "traceprobe-service-map-ingest"):
            service = find(docs, "Service", name)
            assert service["spec"]["selector"].items() <= pods["metadata"]["labels"].items()


@pytest.mark.parametrize("which", ["default", "custom"])
def test_chart_pods_are_unprivileged(which: str, request: Any) -> None:
    for spec in _pod_specs(request.getfixturevalue(which)):
        assert not ({"hostNetwork", "hostPID", "hostIPC"} & spec.keys())
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert not [v for v in spec.get("volumes", []) if "hostPath" in v]
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert sc.get("privileged") is not True


def test_operator_env_is_what_its_settings_read(default: list[dict[str, Any]]) -> None:
    op = container(default, "traceprobe-operator")
    assert op["command"] == ["python", "-m", "traceprobe_operator"]
    env = env_of(op)
    documented = {getattr(operator_settings, n) for n in dir(operator_settings)
                  if n.endswith("_ENV")}
    assert set(env) == documented, "the chart sets every operator setting, and only those"
    assert env["TRACEPROBE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    parsed = OperatorSettings.from_env({**env, "TRACEPROBE_NAMESPACE": "traceprobe-system"})
    assert parsed == OperatorSettings(
        namespace="traceprobe-system", agent_image="ghcr.io/traceprobe/traceprobe-agent:0.1.0",
        agent_service_account="traceprobe-agent",
        map_endpoint="traceprobe-service-map-ingest.traceprobe-system.svc:4317",
        map_ca_secret="traceprobe-service-map-tls", map_token_audience="traceprobe-service-map",
        detach_timeout_seconds=60, report_stale_seconds=90)
    assert find(default, "Deployment", "traceprobe-operator")["spec"]["replicas"] == 2


def test_operator_points_agents_at_the_service_map_service(custom: list[dict[str, Any]]) -> None:
    env = env_of(container(custom, "obs-operator"))
    service = find(custom, "Service", "obs-service-map-ingest")
    (ingest,) = service["spec"]["ports"]
    assert ingest["name"] == "ingest"
    assert env["TRACEPROBE_MAP_ENDPOINT"] == (
        f"obs-service-map-ingest.observability.svc:{ingest['port']}")
    assert ingest["port"] == 14317
    assert env["TRACEPROBE_AGENT_IMAGE"] == "registry.example.com:5000/tp/agent:dev"
    assert env["TRACEPROBE_AGENT_SERVICE_ACCOUNT"] == "platform-agent"
    assert env["TRACEPROBE_DETACH_TIMEOUT_SECONDS"] == "30"
    op = find(custom, "Deployment", "obs-operator")
    assert op["spec"]["replicas"] == 3
    pod = op["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-operator"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["containers"][0]["args"] == ["--verbose"]
    assert pod["containers"][0]["imagePullPolicy"] == "Always"


def test_existing_serviceaccounts_are_bound_not_created(custom: list[dict[str, Any]]) -> None:
    accounts = {d["metadata"]["name"] for d in custom if d["kind"] == "ServiceAccount"}
    assert accounts == {"obs-service-map"}
    subjects = {d["metadata"]["name"]: d["subjects"] for d in custom
                if d["kind"] in ("ClusterRoleBinding", "RoleBinding")}
    sa = {"kind": "ServiceAccount", "namespace": "observability"}
    assert subjects["obs-operator"] == [{**sa, "name": "platform-operator"}]
    assert subjects["obs-agent"] == [{**sa, "name": "platform-agent"}]
    assert subjects["obs-service-map"] == [{**sa, "name": "obs-service-map"}]


def test_service_map_ports_probes_and_default_export(default: list[dict[str, Any]]) -> None:
    smap = container(default, "traceprobe-service-map")
    assert smap["command"] == ["python", "-m", "traceprobe_map"]
    assert smap["args"] == [
        "--cluster-name=kubernetes", "--ingest-address=0.0.0.0:4317", "--http-port=8080",
        "--ingest-tls-cert=/etc/traceprobe/ingest-tls/tls.crt",
        "--ingest-tls-key=/etc/traceprobe/ingest-tls/tls.key",
        "--agent-service-account=traceprobe-system/traceprobe-agent",
        "--token-audience=traceprobe-service-map"]
    assert {p["name"]: p["containerPort"] for p in smap["ports"]} == {"ingest": 4317,
                                                                      "http": 8080}
    for probe in ("readinessProbe", "livenessProbe"):
        assert smap[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "env" not in smap, "no export configured: no OTEL_* variables"
    ports = [(p["name"], p["port"], p["targetPort"]) for name in (
        "traceprobe-service-map", "traceprobe-service-map-ingest")
        for p in find(default, "Service", name)["spec"]["ports"]]
    assert ports == [("http", 8080, "http"), ("ingest", 4317, "ingest")]
    assert find(default, "Deployment", "traceprobe-service-map")["spec"]["replicas"] == 1


def test_service_map_export_uses_the_standard_otel_variables(
        custom: list[dict[str, Any]]) -> None:
    smap = container(custom, "obs-service-map")
    env = env_of(smap)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://otel.monitoring.svc:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == {
        "secretKeyRef": {"name": "otlp-auth", "key": "headers"}}
    ca_path = env["OTEL_EXPORTER_OTLP_CERTIFICATE"]
    mount = next(m for m in smap["volumeMounts"] if m["name"] == "export-ca")
    assert ca_path == f"{mount['mountPath']}/ca.pem" and mount["readOnly"] is True
    pod = find(custom, "Deployment", "obs-service-map")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "export-ca")
    assert volume["secret"] == {"secretName": "otlp-ca",
                                "items": [{"key": "ca.pem", "path": "ca.pem"}]}
    assert env["OTEL_METRIC_EXPORT_INTERVAL"] == "15000"  # extraEnv
    assert smap["args"] == ["--cluster-name=prod-eu-1", "--ingest-address=0.0.0.0:14317",
                            "--http-port=18080", "--ingest-tls-cert=/etc/traceprobe/ingest-tls/"
                            "tls.crt", "--ingest-tls-key=/etc/traceprobe/ingest-tls/tls.key",
                            "--agent-service-account=observability/platform-agent",
                            "--token-audience=obs-map", "--export-interval=30",
                            "--service-graph", "--verbose"]
    assert find(custom, "Service", "obs-service-map")["spec"]["type"] == "NodePort"


def test_helm_test_hook_checks_the_service_map(default: list[dict[str, Any]],
                                               custom: list[dict[str, Any]]) -> None:
    pod = find(default, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = " ".join(pod["spec"]["containers"][0]["command"])
    assert "http://traceprobe-service-map:8080" in script
    assert "/healthz" in script and "/api/map" in script
    assert pod["spec"]["restartPolicy"] == "Never"
    assert not [d for d in custom if d["kind"] == "Pod"], "tests.enabled=false drops it"


def test_long_release_names_stay_valid_object_names() -> None:
    docs = render(release="a-very-long-release-name-for-a-platform-team-x",
                  namespace="traceprobe-system")
    for doc in docs:
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
        assert not doc["metadata"]["name"].endswith("-")


def test_agent_pod_defaults_of_the_chart_are_the_operators(default: list[dict[str, Any]]
                                                           ) -> None:
    """values.yaml's agent.* and AgentPodSettings' defaults say the same."""
    env = env_of(container(default, "traceprobe-operator"))
    assert AgentPodSettings.from_json(env["TRACEPROBE_AGENT_POD"]) == AgentPodSettings()


def test_no_monitors_or_metrics_rbac_unless_asked(default: list[dict[str, Any]],
                                                  custom: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in default + custom}
    assert not kinds & {"PodMonitor", "ServiceMonitor"}
    # The one Secret is the map's ingest certificate, not a scraper's token.
    assert [d["metadata"]["name"] for d in default + custom if d["kind"] == "Secret"] == [
        "traceprobe-service-map-tls", "obs-service-map-tls"]
    assert not [d for d in default if "metrics" in d["metadata"]["name"]]
    # Metrics on the node's IP bring the reader role, bound to agent.metrics.readers.
    binding = find(custom, "ClusterRoleBinding", "obs-metrics-reader")
    assert binding["roleRef"]["name"] == "obs-metrics-reader"
    assert binding["subjects"] == NON_DEFAULT["agent"]["metrics"]["readers"]


@pytest.fixture(scope="module")
def monitored() -> list[dict[str, Any]]:
    return render(MONITORED, release="obs", namespace="observability",
                  api_versions=(MONITORING_API,))


def test_pod_monitor_scrapes_the_agents_over_https_with_the_scrapers_token(
        monitored: list[dict[str, Any]]) -> None:
    monitor = find(monitored, "PodMonitor", "obs-agent")
    assert monitor["metadata"]["namespace"] == "observability"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    # It selects the pods the operator renders, on the port they declare.
    env = env_of(container(monitored, "obs-operator"))
    settings = OperatorSettings.from_env({**env, "TRACEPROBE_NAMESPACE": "observability"})
    ds = render_daemonset(settings, [ActiveProbe("TraceProbe", "shop", "web")])
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["observability"]}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    [port] = ds["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert endpoint["port"] == port["name"] == "metrics"
    assert (endpoint["scheme"], endpoint["path"], endpoint["interval"]) == (
        "https", "/metrics", "15s")
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}  # self-signed per agent
    assert endpoint["authorization"] == {
        "type": "Bearer", "credentials": {"name": "obs-metrics-scraper-token", "key": "token"}}
    # That token belongs to a ServiceAccount allowed only `get` /metrics.
    secret = find(monitored, "Secret", "obs-metrics-scraper-token")
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": "obs-metrics-scraper"}
    scraper = find(monitored, "ServiceAccount", "obs-metrics-scraper")
    assert scraper["automountServiceAccountToken"] is False
    binding = find(monitored, "ClusterRoleBinding", "obs-metrics-reader")
    assert {"kind": "ServiceAccount", "name": "obs-metrics-scraper",
            "namespace": "observability"} in binding["subjects"]
    assert find(monitored, "ClusterRole", "obs-metrics-reader")["rules"] == [
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    assert [b for b in monitored if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
            and {"kind": "ServiceAccount", "name": "obs-metrics-scraper",
                 "namespace": "observability"} in b.get("subjects", [])] == [binding]


def test_pod_monitor_with_your_own_token_secret_creates_no_scraper() -> None:
    values = json.loads(json.dumps(MONITORED))
    values["agent"]["metrics"]["podMonitor"]["tokenSecret"] = {"name": "prom-token",
                                                              "key": "t"}
    docs = render(values, api_versions=(MONITORING_API,))
    [endpoint] = find(docs, "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint["authorization"]["credentials"] == {"name": "prom-token", "key": "t"}
    assert not [d for d in docs if "scraper" in d["metadata"]["name"]]


def test_service_monitor_scrapes_the_maps_metrics_on_its_http_port(
        monitored: list[dict[str, Any]]) -> None:
    monitor = find(monitored, "ServiceMonitor", "obs-service-map")
    service = find(monitored, "Service", "obs-service-map")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["observability"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "1m"}
    assert "http" in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "kps"


def test_an_upgrade_never_runs_two_maps(default: list[dict[str, Any]]) -> None:
    """Two maps would export the same series: one replica, replaced by Recreate."""
    spec = find(default, "Deployment", "traceprobe-service-map")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}

