"""`helm install` of charts/traceprobe on the real node, as a user would: the images
built here (no registry), the operator and the service map as real containers with
exactly the chart's securityContext, the agent DaemonSet the operator creates from a
`kubectl apply` of a probe, a map of real pods, `helm test`, and `helm uninstall`
leaving no BPF program behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from harness.chart import NAMESPACE, RELEASE, helm
from harness.collector import Collector
from harness.metrics import by_label, samples
from harness.node import RealNode
from harness.node_release import ChartRelease, all_ready, apply, bpf_program_ids, pods
from harness.waiting import wait_until

pytestmark = pytest.mark.timeout(900)
CLUSTER = "real-node"
SHOP = "node-shop"
PROBE = {
    "apiVersion": "traceprobe.io/v1alpha1", "kind": "ClusterTraceProbe",
    "metadata": {"name": "node-all"},
    "spec": {"interval": "2s", "namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [SHOP]}]}},
}


@dataclass
class Release:
    chart: ChartRelease
    collector: Collector
    programs_before: set[int]


@pytest.fixture(scope="module")
def release(real_node: RealNode, world_dir: Path) -> Iterator[Release]:
    state = Release(ChartRelease(real_node, CLUSTER),
                    Collector(world_dir / "node-collector", host=real_node.node_ip),
                    bpf_program_ids())
    state.collector.start()
    try:
        state.chart.install(f"serviceMap.export.endpoint={state.collector.grpc_endpoint}",
                            "serviceMap.export.intervalSeconds=2")
        yield state
    finally:
        if state.chart.installed:
            state.chart.uninstall()
        real_node.kubectl("delete", "namespace", SHOP, "--wait=false", check=False)
        state.collector.stop()


def test_operator_and_map_run_as_real_containers(real_node: RealNode,
                                                 release: Release) -> None:
    ours = pods(real_node, NAMESPACE, "app.kubernetes.io/instance=traceprobe")
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in ours}
    assert {"operator", "service-map"} <= components, components
    for pod in ours:
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
    apply(real_node, PROBE)
    agents = "app.kubernetes.io/name=traceprobe-agent"
    wait_until(lambda: all_ready(pods(real_node, NAMESPACE, agents)), 240, "agent pods ready",
               diagnose=real_node.diagnose_pods)
    (pod,) = pods(real_node, NAMESPACE, "app.kubernetes.io/name=traceprobe-agent")
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
    print(f"\nthe agent's cgroup: {cgroup.splitlines()[-1]}")

    def attached() -> dict[str, Any] | None:
        out = real_node.kubectl("get", "nodereport", real_node.name, "-o", "json",
                                check=False).stdout
        report = json.loads(out) if out else {}
        entries = (report.get("status") or {}).get("probes") or []
        return report if any(e["state"] == "Attached" for e in entries) else None

    report = wait_until(attached, 180, "the agent reports the probe Attached",
                        diagnose=real_node.diagnose_pods)
    assert report["status"]["headerSource"], report["status"]
    # The agent's pod links cgroup programs at the node's cgroup v2 root: the sock_ops core.
    assert report["status"]["connectionCore"] == "sock_ops", report["status"]
    # The kubelet gave it a token for the map alone, and only the map's CA.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    token = volumes["map-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "traceprobe-service-map", token
    assert [i["key"] for i in volumes["map-ca"]["secret"]["items"]] == ["ca.crt"]


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


def test_the_map_draws_real_pods_through_a_service(real_node: RealNode,
                                                   release: Release) -> None:
    apply(real_node, PROBE, *_shop(real_node.image("workload")))
    wait_until(lambda: all_ready(pods(real_node, SHOP, "app")), 120, "shop pods ready",
               diagnose=real_node.diagnose_pods)

    def edge() -> dict[str, Any] | None:
        return next((e for e in release.chart.api_map()["edges"]
                     if e["source"] == f"workload:{SHOP}/client"
                     and e["target"] == f"service:{SHOP}/web" and e["port"] == 80
                     and e["backends"]), None)

    found = wait_until(edge, 180, "client -> web Service edge with its backend",
                       diagnose=release.chart.diagnose)
    assert found["connections"] > 0 and found["failures"]["refused"] == 0
    # Both web pods are one workload: kube-proxy's DNAT to either is one backend.
    assert [b["id"] for b in found["backends"]] == [f"workload:{SHOP}/web"], found
    assert sum(b["attempts"] for b in found["backends"]) <= found["attempts"]
    # The same edge reached the user's backend through the map's OTLP export.
    points = wait_until(lambda: release.collector.find(
        "traceprobe.edge.connections", **{"k8s.cluster.name": CLUSTER}) or None,
        120, "the Collector received the edge")
    assert points


def test_only_the_agent_writes_the_map(real_node: RealNode, release: Release) -> None:
    """The agent's reports arrived over TLS with its kubelet-projected token (TokenReview'd
    by the map, nothing refused or moved to another node); a client without it is refused."""
    text = release.chart.metrics()
    assert by_label(text, "traceprobe_map_records_total", "outcome")["accepted"] > 0
    assert not any(by_label(text, "traceprobe_map_ingest_refused_requests_total",
                            "cause").values()), text
    assert samples(text, "traceprobe_map_ingest_token_reviews_total")[frozenset()] >= 1
    assert samples(text, "traceprobe_map_reattributed_records_total")[frozenset()] == 0
    address, ca = release.chart.ingest()
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(ca), options=[
            ("grpc.ssl_target_name_override", f"{RELEASE}-service-map-ingest.{NAMESPACE}.svc")]
                             ) as channel:
        stub = LogsServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(ExportLogsServiceRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value
    after = by_label(release.chart.metrics(), "traceprobe_map_ingest_refused_requests_total",
                     "cause")
    assert after["no_token"] == 1, after


def test_the_view_opens_through_the_api_server_for_those_allowed(real_node: RealNode,
                                                                 release: Release) -> None:
    """The chart's view Service behind the real API server's service proxy: RBAC on
    services/proxy decides, not the network."""
    path = f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}-service-map:http/proxy/api/map"
    snapshot = json.loads(real_node.kubectl("get", "--raw", path).stdout)
    assert snapshot["cluster"] == CLUSTER
    outsider = real_node.cp.serviceaccount_kubeconfig("node-outsider", "viewer")
    denied = real_node.kubectl("get", "--raw", path, kubeconfig_path=outsider, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    try:
        real_node.kubectl("create", "role", "map-viewer", "-n", NAMESPACE, "--verb=get",
                          "--resource=services/proxy",
                          f"--resource-name={RELEASE}-service-map:http")
        real_node.kubectl("create", "rolebinding", "map-viewer", "-n", NAMESPACE,
                          "--role=map-viewer", "--serviceaccount=node-outsider:viewer")
        wait_until(lambda: real_node.kubectl("get", "--raw", path, kubeconfig_path=outsider,
                                             check=False).returncode == 0,
                   30, "the viewer allowed after the RoleBinding")
        ingest = (f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}-service-map-ingest:"
                  "ingest/proxy/")
        other = real_node.kubectl("get", "--raw", ingest, kubeconfig_path=outsider, check=False)
        assert "forbidden" in other.stderr.lower(), other.stderr  # the Role names the view only
    finally:
        real_node.kubectl("delete", "rolebinding,role", "map-viewer", "-n", NAMESPACE,
                          check=False)
        real_node.kubectl("delete", "namespace", "node-outsider", "--wait=false", check=False)


def test_helm_test_passes(real_node: RealNode, release: Release) -> None:
    result = helm("test", RELEASE, "-n", NAMESPACE, "--timeout", "120s",
                  kubeconfig=real_node.cp.admin_kubeconfig, timeout=180)
    assert "Phase:          Succeeded" in result.stdout, result.stdout


def test_helm_uninstall_removes_what_it_installed(real_node: RealNode,
                                                  release: Release) -> None:
    """Last in the module: deleting the probe detaches the agents, the uninstall
    removes every object of the release, and no BPF program of the agents is left.
    What stays, as documented: the CRDs (Helm never deletes them)."""
    release.chart.uninstall()
    wait_until(lambda: (not pods(
        real_node, NAMESPACE, "app.kubernetes.io/instance=traceprobe") and not pods(
        real_node, NAMESPACE, "app.kubernetes.io/name=traceprobe-agent")) or None,
        120, "the release's pods gone", diagnose=real_node.diagnose_pods)
    leftover = wait_until(lambda: (
        bpf_program_ids() - release.programs_before) == set() or None,
        60, "the agents' BPF programs unloaded")
    assert leftover
    out = real_node.kubectl("get", "daemonsets,deployments,services,serviceaccounts",
                            "-n", NAMESPACE, "-o", "name").stdout.split()
    assert [o for o in out if "traceprobe" in o] == [], out
    crds = real_node.kubectl("get", "crd", "-o", "name").stdout
    assert "traceprobes.traceprobe.io" in crds

