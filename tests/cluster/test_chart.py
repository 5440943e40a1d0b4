"""The Helm chart against the real API server: its rendered objects pass a server-side
dry-run (default and non-default values) and a real apply; the operator, run as the
chart's ServiceAccount with exactly the chart's RBAC, does its job (what each
ServiceAccount may do: test_chart_rbac.py).

No kubelet runs here, so Deployments get no pods and `helm test` cannot run; the
test Pod is checked by the dry-run instead."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from kubernetes import client

from harness.chart import (
    MONITORED,
    NON_DEFAULT,
    container,
    env_of,
    find,
    helm,
    render,
)
from harness.chart_cluster import NS, PROBE_NS, RELEASE, apply_docs, get_json
from harness.install import ensure_node
from harness.procs import ManagedProcess
from harness.tools import REPO
from harness.waiting import wait_until
from harness.world import GROUP, VERSION
from traceprobe_operator.agent_workload import ActiveProbe, render_daemonset
from traceprobe_operator.settings import OperatorSettings


@pytest.mark.parametrize("namespace,values", [("tpchart-alt", NON_DEFAULT),
                                              ("tpchart-export", {"serviceMap": {"export": {
                                                  "endpoint": "http://otel.monitoring:4317"}}})],
                         ids=["non-default", "plain-export"])
def test_non_default_values_pass_a_server_dry_run(installed: Any, namespace: str,
                                                  values: dict[str, Any]) -> None:
    cp, _, tmp = installed
    cp.kubectl("create", "namespace", namespace, check=False)
    docs = render(values, release="other", namespace=namespace)
    result = apply_docs(cp, docs, tmp, "--dry-run=server")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs)


def test_the_dry_run_does_validate(installed: Any) -> None:
    """A misspelt field in a rendered object is refused (so passing means something)."""
    cp, docs, tmp = installed
    broken = json.loads(json.dumps(find(docs, "Deployment", f"{RELEASE}-traceprobe-operator")))
    broken["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    result = apply_docs(cp, [broken], tmp, "--dry-run=server")
    assert result.returncode != 0 and "readOnlyRootFilesytem" in result.stderr


def test_real_apply_created_every_object(installed: Any) -> None:
    cp, docs, _ = installed
    for doc in docs:
        if doc["kind"] == "Pod":
            continue
        namespace = doc["metadata"].get("namespace")
        args = ["get", f"{doc['kind']}.{doc['apiVersion'].split('/')[0]}"
                if "/" in doc["apiVersion"] else doc["kind"], doc["metadata"]["name"]]
        result = cp.kubectl(*args, *(["-n", namespace] if namespace else []), check=False)
        assert result.returncode == 0, result.stderr


def test_notes_say_how_to_open_the_map_and_apply_a_first_probe(installed: Any) -> None:
    cp, _, tmp = installed
    out = helm("install", RELEASE, str(REPO / "charts/traceprobe"), "-n", NS,
               "--dry-run=client", "--take-ownership",  # nothing is written
               kubeconfig=cp.admin_kubeconfig).stdout
    notes = out.split("NOTES:", 1)[1]
    assert f"kubectl port-forward -n {NS} svc/{RELEASE}-traceprobe-service-map 8080:8080" in notes
    example = re.search(r"<<'YAML'\n(.*?)\n\s*YAML\n", notes, re.S)
    assert example, notes
    probe = yaml.safe_load(re.sub(r"(?m)^  ", "", example.group(1)))
    assert probe["kind"] == "TraceProbe"
    result = apply_docs(cp, [probe], tmp, "--dry-run=server")
    assert result.returncode == 0, result.stderr
    assert "each agent serves /metrics on its node's 127.0.0.1:9464 only" in " ".join(
        notes.split())
    assert (f"/api/v1/namespaces/{NS}/services/{RELEASE}-traceprobe-service-map:http/proxy/"
            in notes)


def test_an_upgrade_keeps_the_ingest_certificate(installed: Any) -> None:
    """The chart makes the CA once: a later render against the cluster (helm's lookup)
    reuses the Secret already there, so agents' trust in the map survives upgrades."""
    cp, docs, _ = installed
    name = f"{RELEASE}-traceprobe-service-map-tls"
    stored = get_json(cp, "secret", "-n", NS, name)["data"]
    assert stored == find(docs, "Secret", name)["data"]
    out = helm("install", RELEASE, str(REPO / "charts/traceprobe"), "-n", NS,
               "--dry-run=server", "--take-ownership",
               kubeconfig=cp.admin_kubeconfig).stdout
    rendered = [d for d in yaml.safe_load_all(out.split("NOTES:", 1)[0].split("MANIFEST:", 1)[1])
                if d and d["kind"] == "Secret" and d["metadata"]["name"] == name]
    assert [d["data"] for d in rendered] == [stored]
    # Without a cluster to look in, every render makes a new CA: the reuse above is real.
    assert find(render(release=RELEASE, namespace=NS), "Secret", name)["data"] != stored


#: Stand-ins for the Prometheus Operator's CRDs (any spec accepted): enough for the API
#: server to serve monitoring.coreos.com/v1, which the chart's monitors wait for.
STUB_MONITOR_CRDS: list[dict[str, Any]] = [{
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{plural}.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"plural": plural, "singular": kind.lower(), "kind": kind,
                       "listKind": f"{kind}List"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
} for plural, kind in (("podmonitors", "PodMonitor"), ("servicemonitors", "ServiceMonitor"))]


def test_monitors_render_only_where_the_prometheus_operator_api_is(installed: Any) -> None:
    """Capabilities from the real API server's discovery, then a server-side dry-run of
    every object with metrics on the node's IP and both monitors."""
    cp, _, tmp = installed
    values = tmp / "monitored.yaml"
    values.write_text(json.dumps(MONITORED))
    args = ("install", "monitored", str(REPO / "charts/traceprobe"), "-n", "tpchart-monitored",
            "--create-namespace", "-f", str(values), "--take-ownership")
    refused = helm(*args, "--dry-run=client", check=False, kubeconfig=cp.admin_kubeconfig)
    assert refused.returncode != 0
    assert "agent.metrics.podMonitor.enabled needs the monitoring.coreos.com/v1 API" in (
        refused.stderr)
    assert apply_docs(cp, STUB_MONITOR_CRDS, tmp).returncode == 0
    try:
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                   *[f"crd/{d['metadata']['name']}" for d in STUB_MONITOR_CRDS])
        cp.kubectl("create", "namespace", "tpchart-monitored", check=False)
        dry = wait_until(lambda: (r := helm(*args, "--dry-run=server", check=False,
                                            kubeconfig=cp.admin_kubeconfig)).returncode == 0
                         and r, timeout=30, interval=2, what="helm dry-run with monitors")
        docs = [d for d in yaml.safe_load_all(dry.stdout.split("NOTES:")[0].split(
            "MANIFEST:", 1)[1]) if d]
        assert {d["kind"] for d in docs} >= {"PodMonitor", "ServiceMonitor", "Secret"}
        notes = " ".join(dry.stdout.split("NOTES:", 1)[1].split())
        assert "Bind ClusterRole obs-metrics-reader to your Prometheus's ServiceAccount" in notes
        assert "PodMonitor obs-agent scrapes them with the token in Secret " \
               "obs-metrics-scraper-token" in notes
        assert "ServiceMonitor obs-service-map scrapes the service map's /metrics" in notes
    finally:
        cp.kubectl("delete", "--wait=false", "--ignore-not-found",
                   *[f"crd/{d['metadata']['name']}" for d in STUB_MONITOR_CRDS], check=False)


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_the_agent_daemonset_the_chart_makes_passes_a_server_dry_run(
        installed: Any, values: dict[str, Any]) -> None:
    """Tolerations, priority class, resources, rollout, probes and ports as the API
    server's own validation sees them (rendered by the operator from the chart's env)."""
    cp, _, tmp = installed
    docs = render(values, release=RELEASE, namespace=NS)
    operator = next(d for d in docs if d["kind"] == "Deployment"
                    and d["metadata"]["name"].endswith("-operator"))
    env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    settings = OperatorSettings.from_env({**env, "TRACEPROBE_NAMESPACE": NS})
    ds = render_daemonset(settings, [ActiveProbe("TraceProbe", PROBE_NS, "web")])
    result = apply_docs(cp, [ds], tmp, "--dry-run=server", "-o", "json")
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    assert stored["spec"]["updateStrategy"] == ds["spec"]["updateStrategy"]
    assert stored["spec"]["template"]["spec"]["tolerations"] == ds["spec"]["template"][
        "spec"]["tolerations"]


@pytest.fixture(scope="module")
def operator(installed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The operator from source, with the chart Deployment's env and ServiceAccount."""
    cp, docs, _ = installed
    pod = find(docs, "Deployment", f"{RELEASE}-traceprobe-operator")["spec"]["template"]["spec"]
    kubeconfig = cp.serviceaccount_kubeconfig(NS, pod["serviceAccountName"])
    env = {k: v for k, v in env_of(container(docs, f"{RELEASE}-traceprobe-operator")).items()
           if isinstance(v, str)}
    env |= {"TRACEPROBE_NAMESPACE": NS, "TRACEPROBE_DETACH_TIMEOUT_SECONDS": "5"}
    log = tmp_path_factory.mktemp("chart-operator") / "operator.log"
    proc = ManagedProcess("chart-operator", [sys.executable, "-m", "traceprobe_operator"], log,
                          env={**os.environ, **env, "KUBECONFIG": str(kubeconfig),
                               "PYTHONUNBUFFERED": "1"}, cwd=REPO)
    yield proc
    proc.stop()


def _condition(cp: Any, name: str, type_: str) -> dict[str, Any]:
    probe = get_json(cp, "traceprobes", name, "-n", PROBE_NS) or {}
    return next((c for c in (probe.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), {})


def test_operator_with_the_charts_rbac_runs_agents_and_writes_status(
        installed: Any, operator: ManagedProcess) -> None:
    cp, docs, _ = installed
    ensure_node(cp, "tpchart-node", {"kubernetes.io/os": "linux", "tpchart": "agents"})
    cp.kubectl("create", "namespace", PROBE_NS, check=False)
    cp.kubectl("apply", "-f", "-", input_text=(
        f"apiVersion: {GROUP}/{VERSION}\nkind: TraceProbe\nmetadata: {{name: web, namespace: "
        f"{PROBE_NS}}}\nspec: {{nodeSelector: {{tpchart: agents}}}}\n"))
    ds = wait_until(lambda: get_json(cp, "daemonset", "traceprobe-agent", "-n", NS), timeout=60,
                    what=f"agent DaemonSet in {NS}")
    pod = ds["spec"]["template"]["spec"]
    env = env_of(container(docs, f"{RELEASE}-traceprobe-operator"))
    assert pod["serviceAccountName"] == f"{RELEASE}-traceprobe-agent"
    assert pod["containers"][0]["image"] == env["TRACEPROBE_AGENT_IMAGE"]
    assert (f"--map-endpoint={RELEASE}-traceprobe-service-map-ingest.{NS}.svc:4317"
            in pod["containers"][0]["args"])
    # What node-agent users expect, through the real API server (defaults applied).
    assert pod["tolerations"] == [{"operator": "Exists", "effect": "NoSchedule"},
                                  {"operator": "Exists", "effect": "NoExecute"}]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {
        "maxUnavailable": 1, "maxSurge": 0}}
    for probe in ("readinessProbe", "livenessProbe"):
        assert pod["containers"][0][probe]["exec"]["command"][:2] == ["bash", "-c"]
    wait_until(lambda: _condition(cp, "web", "Accepted").get("status") == "True",
               what="Accepted=True")
    wait_until(lambda: "tpchart-node" in _condition(cp, "web", "Ready").get("message", ""),
               what="Ready names the node whose agent has not reported")

    # The agent's side, as the chart's agent ServiceAccount (create, then patch status as
    # the agent does: no GET of the status subresource, which its role does not grant).
    agent = client.CustomObjectsApi(cp.api_client(
        cp.serviceaccount_kubeconfig(NS, f"{RELEASE}-traceprobe-agent")))
    agent.create_cluster_custom_object(GROUP, VERSION, "nodereports", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeReport",
        "metadata": {"name": "tpchart-node"}, "spec": {"nodeName": "tpchart-node"}})

    def report(state: str) -> None:
        agent.patch_cluster_custom_object_status(GROUP, VERSION, "nodereports", "tpchart-node", {
            "status": {"heartbeatTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "probes": [{"probe": {"kind": "TraceProbe", "namespace": PROBE_NS,
                                             "name": "web", "generation": 1},
                                   "state": state}]}})

    report("Attached")
    wait_until(lambda: _condition(cp, "web", "Ready").get("status") == "True", what="Ready=True")

    cp.kubectl("delete", "traceprobes", "web", "-n", PROBE_NS, "--wait=false")
    report("Detached")
    wait_until(lambda: get_json(cp, "traceprobes", "web", "-n", PROBE_NS) is None, timeout=30,
               what="probe deleted once its agent reports it detached")
    others = (get_json(cp, "traceprobes", "-A")["items"]
              + get_json(cp, "clustertraceprobes")["items"])
    if not others:  # other test modules' probes would rightly keep the agents running
        wait_until(lambda: get_json(cp, "daemonset", "traceprobe-agent", "-n", NS) is None,
                   what="agent DaemonSet removed with the last probe")
    assert "Traceback" not in operator.log.read_text()
