"""The chart installed on the real node as a user installs it (`helm install`, then
`kubectl apply` of a probe), and what tests and the demo ask of it: its pods, the
map's /api/map, what the agents left in the kernel."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from typing import Any

import yaml

from harness.chart import CHART, NAMESPACE, RELEASE, helm
from harness.node import RealNode


def apply(node: RealNode, *manifests: dict[str, Any]) -> None:
    node.kubectl("apply", "-f", "-",
                 input_text="\n---\n".join(yaml.safe_dump(m) for m in manifests))


def pods(node: RealNode, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = node.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def running(node: RealNode, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Pods that run and are not on their way out (a replaced pod terminates a while)."""
    return [p for p in pods(node, namespace, selector)
            if not p["metadata"].get("deletionTimestamp")
            and p.get("status", {}).get("phase") == "Running"]


def all_ready(items: list[dict[str, Any]]) -> bool:
    return bool(items) and all(
        c.get("ready") for p in items for c in (p.get("status") or {}).get("containerStatuses")
        or [{}])


def bpf_program_ids() -> set[int]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True,
                         text=True, check=True).stdout
    return {int(p["id"]) for p in json.loads(out or "[]")}


class ChartRelease:
    """charts/traceprobe installed on `node` under the name the chart's tests use."""

    def __init__(self, node: RealNode, cluster: str) -> None:
        self.node = node
        self.cluster = cluster
        self.installed = False

    def install(self, *values: str, timeout: int = 300) -> None:
        sets = [arg for v in (f"clusterName={self.cluster}", *values) for arg in ("--set", v)]
        self.installed = True
        helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace", *sets,
             "--wait", "--timeout", f"{timeout}s", kubeconfig=self.node.cp.admin_kubeconfig,
             timeout=timeout + 60)

    def uninstall(self) -> None:
        """Probes first (the operator removes their agents), then the release."""
        self.node.kubectl("delete", "clustertraceprobe,traceprobe", "--all", "-A",
                          "--wait=true", "--timeout=90s", check=False)
        helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "180s",
             kubeconfig=self.node.cp.admin_kubeconfig, check=False, timeout=240)
        self.installed = False

    def map_url(self) -> str:
        """The map's HTTP address: its pod IP, which the node's host reaches directly."""
        (pod,) = running(self.node, NAMESPACE, "app.kubernetes.io/component=service-map")
        return f"http://{pod['status']['podIP']}:8080"

    def api_map(self, query: str = "") -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.map_url()}/api/map{query}", timeout=5) as resp:
            snapshot: dict[str, Any] = json.load(resp)
        return snapshot

    def metrics(self) -> str:
        """The map's /metrics (Prometheus text)."""
        with urllib.request.urlopen(f"{self.map_url()}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def ingest(self) -> tuple[str, bytes]:
        """The map's ingest address (pod IP) and the CA its certificate is signed by."""
        (pod,) = running(self.node, NAMESPACE, "app.kubernetes.io/component=service-map")
        secret = json.loads(self.node.kubectl(
            "get", "secret", "-n", NAMESPACE, f"{RELEASE}-service-map-tls", "-o",
            "json").stdout)
        return f"{pod['status']['podIP']}:4317", base64.b64decode(secret["data"]["ca.crt"])

    def logs(self, selector: str, tail: int = 30) -> str:
        return self.node.kubectl("logs", "-n", NAMESPACE, f"--tail={tail}", "-l", selector,
                                 check=False).stdout

    def diagnose(self) -> str:
        """The map's edges, the agent's and the map's last log lines, the pods' states."""
        try:
            edges = [(e["source"], e["target"], e["port"], e["connections"])
                     for e in self.api_map()["edges"]]
        except (OSError, ValueError) as exc:
            edges = [("map unreachable", str(exc), 0, 0)]
        logs = {c: self.logs(f"app.kubernetes.io/{c}")
                for c in ("name=traceprobe-agent", "component=service-map")}
        return f"edges: {edges}\n{logs}\n{self.node.diagnose_pods()}"
