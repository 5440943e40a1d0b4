"""`helm install` of charts/traceprobe on the real node, as a user would: the images
built here (no registry), the operator and the service map as real containers with
exactly the chart's securityContext, the agent DaemonSet the operator creates from a
`kubectl apply` of a probe, a map of real pods, `helm test`, and `helm uninstall`
leaving no BPF program behind."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.chart import CHART, NAMESPACE, RELEASE, helm
from harness.collector import Collector
from harness.node import RealNode
from harness.node_host import wait_until

pytestmark = pytest.mark.timeout(900)
CLUSTER = "real-node"
SHOP = "node-shop"
PROBE = {
    "apiVersion": "traceprobe.io/v1alpha1", "kind": "ClusterTraceProbe",
    "metadata": {"name": "node-all"},
    "spec": {"interval": "2s", "namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [SHOP]}]}},
}


def _bpf_program_ids() -> set[int]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True,
                         text=True, check=True).stdout
    return {int(p["id"]) for p in json.loads(out or "[]")}


def _apply(node: RealNode, *manifests: dict[str, Any]) -> None:
    node.kubectl("apply", "-f", "-",
                 input_text="\n---\n".join(yaml.safe_dump(m) for m in manifests))


def _pods(node: RealNode, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = node.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _all_ready(pods: list[dict[str, Any]]) -> bool:
    return bool(pods) and all(
        c.get("ready") for p in pods for c in (p.get("status") or {}).get("containerStatuses")
        or [{}])


@dataclass
class Release:
    collector: Collector
    programs_before: set[int]
    installed: bool = True


def _uninstall(real_node: RealNode) -> None:
    real_node.kubectl("delete", "clustertraceprobe", "--all", "--wait=true", "--timeout=90s",
                      check=False)
    helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "180s",
         kubeconfig=real_node.cp.admin_kubeconfig, check=False, timeout=240)


@pytest.fixture(scope="module")
def release(real_node: RealNode, world_dir: Path) -> Iterator[Release]:
    state = Release(Collector(world_dir / "node-collector", host=real_node.node_ip),
                    _bpf_program_ids())
    state.collector.start()
    try:
        helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace",
             "--set", f"clusterName={CLUSTER}",
             "--set", f"serviceMap.export.endpoint={state.collector.grpc_endpoint}",
             "--set", "serviceMap.export.intervalSeconds=2",
             "--wait", "--timeout", "300s", kubeconfig=real_node.cp.admin_kubeconfig,
             timeout=360)
        yield state
    finally:
        if state.installed:
            _uninstall(real_node)
        real_node.kubectl("delete", "namespace", SHOP, NAMESPACE, "--wait=false", check=False)
        state.collector.stop()


def test_operator_and_map_run_as_real_containers(real_node: RealNode,
                                                 release: Release) -> None:
    pods = _pods(real_node, NAMESPACE, "app.kubernetes.io/instance=traceprobe")
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
    assert {"operator", "service-map"} <= components, components
    for pod in pods:
        for status in pod["status"]["containerStatuses"]:
            assert status["containerID"].startswith("containerd://"), status
            assert status["ready"], status
        for container in pod["spec"]["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_a_probe_runs_the_agent_daemonset_with_the_charts_pod_spec(
        real_node: RealNode, release: Release) -> None:
    _apply(real_node, PROBE)
    wait_until("agent pods ready", lambda: _all_ready(
        _pods(real_node, NAMESPACE, "app.kubernetes.io/name=traceprobe-agent")), 240,
        real_node.diagnose_pods)
    (pod,) = _pods(real_node, NAMESPACE, "app.kubernetes.io/name=traceprobe-agent")
    (container,) = pod["spec"]["containers"]
    sc = container["securityContext"]
    assert not sc.get("privileged") and not pod["spec"].get("hostPID")
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    (status,) = pod["status"]["containerStatuses"]
    container_id = status["containerID"].removeprefix("containerd://")
    pid = real_node.container_pid(container_id)
    # The agent process has exactly the added capabilities, as the kernel sees them.
    caps = dict(line.split(":\t") for line in Path(f"/proc/{pid}/status").read_text()
                .splitlines() if line.startswith("Cap"))
    effective = int(caps["CapEff"], 16)
    wanted = {"BPF": 39, "PERFMON": 38, "NET_ADMIN": 12}
    assert {n for n, bit in wanted.items() if effective >> bit & 1} == set(
        sc["capabilities"]["add"]), caps
    cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    assert "0::/kubepods/" in cgroup and container_id in cgroup, cgroup

    def attached() -> dict[str, Any] | None:
        out = real_node.kubectl("get", "nodereport", real_node.name, "-o", "json",
                                check=False).stdout
        report = json.loads(out) if out else {}
        entries = (report.get("status") or {}).get("probes") or []
        return report if any(e["state"] == "Attached" for e in entries) else None

    report = wait_until("the agent reports the probe Attached", attached, 180,
                        real_node.diagnose_pods)
    assert report["status"]["headerSource"], report["status"]


def _shop(image: str) -> list[dict[str, Any]]:
    labels = {"app": "web"}
    serve = "exec python3 -m http.server 8080 --directory /srv"
    client = ("import time, urllib.request\n"
              "while True:\n"
              f"    urllib.request.urlopen('http://web.{SHOP}.svc.cluster.local/',"
              " timeout=5).read()\n"
              "    time.sleep(0.5)\n")
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SHOP}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": SHOP},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "web", "image": image,
                                      "imagePullPolicy": "Never",
                                      "command": ["sh", "-c", serve],
                                      "ports": [{"containerPort": 8080}]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": SHOP},
         "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "client", "namespace": SHOP},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "client"}},
                  "template": {"metadata": {"labels": {"app": "client"}}, "spec": {
                      "terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "client", "image": image,
                                      "imagePullPolicy": "Never",
                                      "command": ["python3", "-c", client]}]}}}},
    ]


def _map_url(real_node: RealNode) -> str:
    (pod,) = _pods(real_node, NAMESPACE, "app.kubernetes.io/component=service-map")
    return f"http://{pod['status']['podIP']}:8080"


def test_the_map_draws_real_pods_through_a_service(real_node: RealNode,
                                                   release: Release) -> None:
    _apply(real_node, PROBE, *_shop(real_node.image("workload")))
    wait_until("shop pods ready", lambda: _all_ready(_pods(real_node, SHOP, "app")), 120,
               real_node.diagnose_pods)
    url = _map_url(real_node)

    def edge() -> dict[str, Any] | None:
        with urllib.request.urlopen(f"{url}/api/map", timeout=5) as resp:
            snapshot = json.load(resp)
        return next((e for e in snapshot["edges"]
                     if e["source"] == f"workload:{SHOP}/client"
                     and e["target"] == f"service:{SHOP}/web" and e["port"] == 80
                     and e["backends"]), None)

    def diagnose() -> str:
        with urllib.request.urlopen(f"{url}/api/map", timeout=5) as resp:
            edges = [(e["source"], e["target"], e["port"], len(e["backends"]))
                     for e in json.load(resp)["edges"]]
        logs = {c: real_node.kubectl("logs", "-n", NAMESPACE, "--tail=30", "-l",
                                     f"app.kubernetes.io/{c}", check=False).stdout
                for c in ("name=traceprobe-agent", "component=service-map")}
        return f"edges: {edges}\n{logs}\n{real_node.diagnose_pods()}"

    found = wait_until("client -> web Service edge with its backend", edge, 180, diagnose)
    assert found["connections"] > 0 and found["failures"]["refused"] == 0
    # Both web pods are one workload: kube-proxy's DNAT to either is one backend.
    assert [b["id"] for b in found["backends"]] == [f"workload:{SHOP}/web"], found
    assert sum(b["connections"] for b in found["backends"]) <= found["connections"]
    # The same edge reached the user's backend through the map's OTLP export.
    points = wait_until("the Collector received the edge", lambda: release.collector.find(
        "traceprobe.edge.connections", **{"k8s.cluster.name": CLUSTER}) or None, 120)
    assert points


def test_helm_test_passes(real_node: RealNode, release: Release) -> None:
    result = helm("test", RELEASE, "-n", NAMESPACE, "--timeout", "120s",
                  kubeconfig=real_node.cp.admin_kubeconfig, timeout=180)
    assert "Phase:          Succeeded" in result.stdout, result.stdout


def test_helm_uninstall_removes_what_it_installed(real_node: RealNode,
                                                  release: Release) -> None:
    """Last in the module: deleting the probe detaches the agents, the uninstall
    removes every object of the release, and no BPF program of the agents is left.
    What stays, as documented: the CRDs (Helm never deletes them)."""
    _uninstall(real_node)
    release.installed = False
    wait_until("the release's pods gone", lambda: (not _pods(
        real_node, NAMESPACE, "app.kubernetes.io/instance=traceprobe") and not _pods(
        real_node, NAMESPACE, "app.kubernetes.io/name=traceprobe-agent")) or None, 120,
        real_node.diagnose_pods)
    leftover = wait_until("the agents' BPF programs unloaded", lambda: (
        _bpf_program_ids() - release.programs_before) == set() or None, 60)
    assert leftover
    out = real_node.kubectl("get", "daemonsets,deployments,services,serviceaccounts",
                            "-n", NAMESPACE, "-o", "name").stdout.split()
    assert [o for o in out if "traceprobe" in o] == [], out
    crds = real_node.kubectl("get", "crd", "-o", "name").stdout
    assert "traceprobes.traceprobe.io" in crds
