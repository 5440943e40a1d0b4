"""Workloads of real pods for the real node, as manifests: every container runs the
workload image (Debian + python3, PostgreSQL, Redis and their Python clients) with
tests/harness/traffic.py (and http_traffic.py, db_traffic.py) mounted from a
ConfigMap, so the same generator that is the truth of the simulated tiers serves and
dials here, through kube-proxy Services and CoreDNS names."""

from __future__ import annotations

from typing import Any

from harness.db_servers import DB_TRAFFIC
from harness.traffic_control import GRPC_TRAFFIC, HTTP_TRAFFIC, TRAFFIC

MOUNT = "/opt/traffic"
SCRIPT = f"{MOUNT}/traffic.py"
HTTP_SCRIPT = f"{MOUNT}/http_traffic.py"
DB_SCRIPT = f"{MOUNT}/db_traffic.py"
GRPC_SCRIPT = f"{MOUNT}/grpc_traffic.py"
CONFIGMAP = "traffic-generator"
READY_FILE = "/tmp/serving"


def traffic_configmap(namespace: str) -> dict[str, Any]:
    scripts = {}
    for path, key in ((TRAFFIC, "traffic.py"), (HTTP_TRAFFIC, "http_traffic.py"),
                      (DB_TRAFFIC, "db_traffic.py"), (GRPC_TRAFFIC, "grpc_traffic.py")):
        with open(path, encoding="utf-8") as f:
            scripts[key] = f.read()
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": namespace}, "data": scripts}


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pod_spec(image: str, command: list[str], *, host_network: bool = False,
             restart: str = "Always", port: int | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main", "image": image, "imagePullPolicy": "Never", "command": command,
        "volumeMounts": [{"name": "traffic", "mountPath": MOUNT, "readOnly": True}]}
    if port is not None:
        container["ports"] = [{"containerPort": port}]
        # Not a tcpSocket probe: the kubelet's connections would be traffic too.
        container["readinessProbe"] = {"exec": {"command": ["test", "-e", READY_FILE]},
                                       "periodSeconds": 1}
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1, "restartPolicy": restart,
        "containers": [container],
        "volumes": [{"name": "traffic", "configMap": {"name": CONFIGMAP}}]}
    if host_network:
        spec |= {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}
    return spec


def serve(port: int, response: int, *extra: str) -> list[str]:
    """A server that logs each peer it accepts (`peers()` reads them back)."""
    return ["python3", "-u", SCRIPT, "serve", str(port), str(response), "--family", "4",
            "--ready-file", READY_FILE, "--log-peers", *extra]


def peers(log: str) -> list[str]:
    """The peer addresses a serve() container accepted, from its log."""
    return [line.split()[1] for line in log.splitlines() if line.startswith("peer ")]


def udp_echo(port: int) -> list[str]:
    """A UDP server (IPv4) answering each datagram with one half its size."""
    return ["python3", "-u", SCRIPT, "udp-echo", str(port), "--ready-file", READY_FILE]


def udp_call(host: str, port: int, sizes: list[int]) -> list[str]:
    return ["python3", "-u", SCRIPT, "udp-call", host, str(port), *map(str, sizes)]


def dial(host: str, port: int, request: int, *extra: str) -> list[str]:
    return ["python3", "-u", SCRIPT, "dial", host, str(port), str(request), *extra]


def http_serve(port: int) -> list[str]:
    """An HTTP/1.1 server (tests/harness/http_traffic.py serve)."""
    return ["python3", "-u", HTTP_SCRIPT, "serve", str(port), "--ready-file", READY_FILE]


def http_call(host: str, port: int, *requests: str) -> list[str]:
    """Requests on one keep-alive connection; prints each one's method and status."""
    return ["python3", "-u", HTTP_SCRIPT, "call", host, str(port), *requests]


def db_serve(system: str, port: int) -> list[str]:
    """Debian's postgres or redis-server (tests/harness/db_traffic.py pg-/redis-serve)."""
    return ["python3", "-u", DB_SCRIPT, f"{system}-serve", str(port), "--ready-file",
            READY_FILE]


def db_call(system: str, host: str, port: int, *requests: str) -> list[str]:
    """Statements (pg) or commands (redis) on one connection; prints each outcome."""
    return ["python3", "-u", DB_SCRIPT, system, host, str(port), *requests]


def grpc_serve(port: int) -> list[str]:
    """A grpcio server (tests/harness/grpc_traffic.py serve)."""
    return ["python3", "-u", GRPC_SCRIPT, "serve", str(port), "--ready-file", READY_FILE]


def grpc_call(host: str, port: int, *calls: str) -> list[str]:
    """Calls on one channel; prints each one's status code."""
    return ["python3", "-u", GRPC_SCRIPT, "call", host, str(port), *calls]


IDLE = ["sleep", "infinity"]  # a client that tests drive with `kubectl exec`


def deployment(name: str, ns: str, image: str, command: list[str], *, replicas: int = 1,
               labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    labels = {"app": name, **(labels or {})}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": pod_spec(image, command, **spec)}}}


def statefulset(name: str, ns: str, image: str, command: list[str], port: int
                ) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"serviceName": name, "replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": pod_spec(image, command, port=port)}}}


def job(name: str, ns: str, image: str, command: list[str]) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": ns},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"labels": {"app": name}},
                "spec": pod_spec(image, command, restart="Never")}}}


def service(name: str, ns: str, port: int, target: int, *,
            selector: dict[str, str] | None = None, headless: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector or {"app": name},
                            "ports": [{"port": port, "targetPort": target}]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def cluster_probe(name: str, namespaces: list[str], interval: str = "2s",
                  probes: list[str] | None = None) -> dict[str, Any]:
    """`probes`: its kinds (None: the schema's defaults)."""
    spec: dict[str, Any] = {"interval": interval, "namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]}}
    if probes is not None:
        spec["probes"] = probes
    return {"apiVersion": "traceprobe.io/v1alpha1", "kind": "ClusterTraceProbe",
            "metadata": {"name": name}, "spec": spec}
