"""Running traceprobe's own processes against the test control plane: the
operator (as its ServiceAccount) and views of what it wrote."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from harness.procs import ManagedProcess
from harness.tools import REPO

NS = "traceprobe-system"
GROUP, VERSION = "traceprobe.io", "v1alpha1"


class OperatorWorld:
    def __init__(self, cp: Any, tmp: Path) -> None:
        self.cp = cp
        self.tmp = tmp
        api = cp.api_client()
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.sa_kubeconfig = cp.serviceaccount_kubeconfig(NS, "traceprobe-operator")
        self.replicas: list[ManagedProcess] = []

    def start_operator(self, name: str = "op-1", detach_timeout: float = 8) -> ManagedProcess:
        env = {**os.environ, "KUBECONFIG": str(self.sa_kubeconfig), "TRACEPROBE_NAMESPACE": NS,
               "TRACEPROBE_DETACH_TIMEOUT_SECONDS": str(detach_timeout),
               "PYTHONUNBUFFERED": "1"}
        proc = ManagedProcess(name, [sys.executable, "-m", "traceprobe_operator"],
                              self.tmp / f"{name}.log", env=env, cwd=REPO)
        self.replicas.append(proc)
        return proc

    def start_agent(self, node: str, name: str = "agent",
                    metrics_port: int = -1) -> ManagedProcess:
        """The real node agent in cluster mode, as its own ServiceAccount; `metrics_port`
        serves its /metrics on loopback (-1: none)."""
        kubeconfig = self.cp.serviceaccount_kubeconfig(NS, "traceprobe-agent")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        proc = ManagedProcess(name, [sys.executable, "-m", "traceprobe_agent", "--node-name",
                                     node, "--interval", "1", "--metrics-port",
                                     str(metrics_port)],
                              self.tmp / f"{name}.log", env=env, cwd=REPO)
        self.replicas.append(proc)
        return proc

    def node_report(self, node: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_cluster_custom_object(GROUP, VERSION, "nodereports",
                                                              node))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def daemonset(self) -> Any:
        try:
            return self.apps.read_namespaced_daemon_set("traceprobe-agent", NS)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def probe(self, name: str, namespace: str = "shop") -> Any:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                            "traceprobes", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        obj = self.probe(name) or {}
        return next((c for c in (obj.get("status") or {}).get("conditions") or []
                     if c["type"] == type_), {})

    def report(self, node: str, probe: str, state: str, generation: int = 1) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeReport",
                "metadata": {"name": node}, "spec": {"nodeName": node}}
        try:
            self.custom.create_cluster_custom_object(GROUP, VERSION, "nodereports", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        status = {"heartbeatTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "probes": [{"probe": {"kind": "TraceProbe", "namespace": "shop",
                                        "name": probe, "generation": generation},
                              "state": state}]}
        self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "nodereports", node,
                                                       {"status": status})

    def stop(self) -> None:
        for proc in self.replicas:
            proc.stop()
