"""The real node (tests/harness/node.py): kubelet + containerd + runc + CNI,
kube-proxy (iptables) and CoreDNS, against the harness's API server.

Needs root, scripts/node/install-packages.sh, scripts/build-test-tools.sh --node
and scripts/node/build-images.sh; otherwise skipped (failed under CI=true).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness.node import RealNode
from harness.node_config import DNS_SERVICE_IP
from harness.procs import free_port
from harness.waiting import wait_until

pytestmark = pytest.mark.timeout(900)


def _apply(node: RealNode, *manifests: dict[str, Any]) -> None:
    import yaml

    node.kubectl("apply", "-f", "-",
                 input_text="\n---\n".join(yaml.safe_dump(m) for m in manifests))


def _web(namespace: str, image: str) -> list[dict[str, Any]]:
    labels = {"app": "web"}
    serve = ('echo "hello from $HOSTNAME" > /srv/index.html '
             '&& exec python3 -m http.server 8080 --directory /srv')
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": namespace},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "terminationGracePeriodSeconds": 1,
                      "containers": [{
                          "name": "web", "image": image, "imagePullPolicy": "Never",
                          "command": ["sh", "-c", serve],
                          "ports": [{"containerPort": 8080}],
                          "readinessProbe": {"httpGet": {"path": "/", "port": 8080},
                                             "periodSeconds": 1},
                      }]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "web", "namespace": namespace},
         "spec": {"selector": labels,
                  "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}},
    ]


# The pod's IPv4 routes (destination/mask in hex, little-endian, from
# /proc/net/route): read, not probed, so that no packet is ever sent off-machine.
ROUTES = """
import socket, struct
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    dst, mask = (socket.inet_ntoa(struct.pack("<I", int(x, 16))) for x in (f[1], f[7]))
    print(f"{dst}/{mask}")
"""

CLIENT = """
import json, socket, urllib.request
name = "web.{ns}.svc.cluster.local"
seen = []
for _ in range(30):
    with urllib.request.urlopen(f"http://{{name}}/", timeout=5) as resp:
        seen.append(resp.read().decode().strip())
print(json.dumps({{"resolved": socket.gethostbyname(name),
                   "resolv_conf": open("/etc/resolv.conf").read(), "replies": seen}}))
"""


def test_deployment_behind_service_runs_real_containers(real_node: RealNode) -> None:
    from kubernetes import client

    core = client.CoreV1Api(real_node.api_client())
    apps = client.AppsV1Api(real_node.api_client())
    ns = f"rn-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": ns}})
    # The ServiceAccount admission plugin is on: pods wait for the controller's SA.
    wait_until(lambda: core.read_namespaced_service_account("default", ns), 60,
               f"ServiceAccount {ns}/default")
    created = time.monotonic()
    _apply(real_node, *_web(ns, real_node.image("workload")))

    def running_pods() -> list[Any]:
        pods = core.list_namespaced_pod(ns, label_selector="app=web").items
        return [p for p in pods if p.status.phase == "Running"]

    wait_until(running_pods, 120, "a web pod Running", diagnose=real_node.diagnose_pods)
    first_running = time.monotonic() - created
    wait_until(lambda: (apps.read_namespaced_deployment("web", ns).status.ready_replicas
                        or 0) == 2, 120, "Deployment web: 2 ready replicas",
               diagnose=real_node.diagnose_pods)
    all_ready = time.monotonic() - created
    print(f"\nweb: first pod Running {first_running:.1f}s, 2 ready {all_ready:.1f}s after apply")

    # The containers are real: containerd IDs, host processes in the kubelet's cgroups.
    pods = running_pods()
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name == real_node.name
        status = pod.status.container_statuses[0]
        assert status.ready and status.state.running is not None
        assert re.fullmatch(r"containerd://[0-9a-f]{64}", status.container_id), status
        cid = status.container_id.removeprefix("containerd://")
        pid = real_node.container_pid(cid)
        cgroups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        want = f"/kubepods/besteffort/pod{pod.metadata.uid}/{cid}"
        assert f"0::{want}" in cgroups, cgroups  # cgroup2 (unified), as the agent sees it
        assert any(line.endswith(f":memory:{want}") for line in cgroups), cgroups  # v1
        # The pod's IP is the CNI bridge's, and the process lives in another netns.
        assert pod.status.pod_ip.startswith("10.234.0."), pod.status.pod_ip
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")

    # exec goes API server -> kubelet (its serving cert, webhook authz) -> containerd.
    seen_inside = real_node.kubectl("exec", "-n", ns, pods[0].metadata.name, "--",
                                    "cat", "/proc/self/cgroup").stdout
    assert f"pod{pods[0].metadata.uid}" in seen_inside, seen_inside
    print(f"\n/proc/self/cgroup seen inside the container:\n{seen_inside}")
    # containerd's CRI brought up the pod's loopback (the CNI loopback plugin).
    local = real_node.kubectl("exec", "-n", ns, pods[0].metadata.name, "--", "python3", "-c",
                              "import urllib.request as u; "
                              "print(u.urlopen('http://127.0.0.1:8080/', timeout=5).status)")
    assert local.stdout.strip() == "200", local.stdout
    # Pods have no default route: nothing they send can leave this machine.
    routes = real_node.kubectl("exec", "-n", ns, pods[0].metadata.name, "--", "python3",
                               "-c", ROUTES).stdout.split()
    assert "0.0.0.0/0.0.0.0" not in routes, routes
    assert "10.235.0.0/255.255.0.0" in routes, routes  # Services, via the bridge

    service = core.read_namespaced_service("web", ns)
    assert service.spec.cluster_ip.startswith("10.235."), service.spec.cluster_ip

    # Another pod resolves the Service through CoreDNS and is answered through
    # kube-proxy's ClusterIP by both backends.
    client_pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": ns},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "client", "image": real_node.image("workload"),
                                 "imagePullPolicy": "Never",
                                 "command": ["python3", "-c", CLIENT.format(ns=ns)]}]}}
    _apply(real_node, client_pod)

    def finished() -> str | None:
        phase = core.read_namespaced_pod("client", ns).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(finished, 120, "client pod finished", diagnose=real_node.diagnose_pods)
    log = core.read_namespaced_pod_log("client", ns)  # API server -> kubelet -> containerd
    assert phase == "Succeeded", log
    result = json.loads(log.strip().splitlines()[-1])
    assert result["resolved"] == service.spec.cluster_ip, result
    assert f"nameserver {DNS_SERVICE_IP}" in result["resolv_conf"], result
    backends = {f"hello from {p.metadata.name}" for p in pods}
    assert set(result["replies"]) == backends, result["replies"]

    # hostPort through the CNI portmap plugin: the node IP's port reaches the pod.
    host_port = free_port()
    _apply(real_node, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostport", "namespace": ns},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "web", "image": real_node.image("workload"), "imagePullPolicy": "Never",
            "command": ["sh", "-c", 'echo "hostport" > /srv/index.html '
                        '&& exec python3 -m http.server 8080 --directory /srv'],
            "ports": [{"containerPort": 8080, "hostPort": host_port,
                       "hostIP": real_node.node_ip}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}})
    def hostport_ready() -> bool:
        statuses = core.read_namespaced_pod("hostport", ns).status.container_statuses
        return bool(statuses) and all(c.ready for c in statuses)

    wait_until(hostport_ready, 60, "hostport pod ready", diagnose=real_node.diagnose_pods)

    def via_host_port() -> str:
        url = f"http://{real_node.node_ip}:{host_port}/"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode().strip())

    assert wait_until(via_host_port, 30, "host -> node IP hostPort -> pod") == "hostport"

    core.delete_namespace(ns)
