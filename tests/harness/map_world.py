"""The service map and cluster-mode agents as real processes, as their ServiceAccounts."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from harness.install import NAMESPACE
from harness.pods import CGROUP_TREE
from harness.procs import ManagedProcess, free_port, wait_for_port
from harness.tools import REPO


class MapWorld:
    def __init__(self, cp: Any, tmp: Path) -> None:
        self.cp = cp
        self.tmp = tmp
        self.map: ManagedProcess | None = None
        self.ingest_port = 0
        self.http_port = 0
        self.agents: list[ManagedProcess] = []

    def start_map(self, collector_endpoint: str | None, *extra: str,
                  cluster: str = "e2e") -> ManagedProcess:
        kubeconfig = self.cp.serviceaccount_kubeconfig(NAMESPACE, "traceprobe-service-map")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        if collector_endpoint:
            env.update(OTEL_EXPORTER_OTLP_ENDPOINT=collector_endpoint,
                       OTEL_EXPORTER_OTLP_INSECURE="true")
        if not self.ingest_port:
            self.ingest_port, self.http_port = free_port(), free_port()
        self.map = ManagedProcess("service-map", [
            sys.executable, "-m", "traceprobe_map", "--cluster-name", cluster,
            "--ingest-address", f"127.0.0.1:{self.ingest_port}", "--http-host", "127.0.0.1",
            "--http-port", str(self.http_port), "--bucket-seconds", "2",
            "--lateness-seconds", "3", "--export-interval", "2", *extra],
            self.tmp / "service-map.log", env=env, cwd=REPO)
        wait_for_port(self.http_port, 30, self.map.popen)
        return self.map

    def start_agent(self, node: str, metrics_port: int = -1) -> ManagedProcess:
        """A cluster-mode agent for `node` (its probes set its interval); `metrics_port`
        serves its /metrics on loopback (-1: none)."""
        kubeconfig = self.cp.serviceaccount_kubeconfig(NAMESPACE, "traceprobe-agent")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        agent = ManagedProcess(f"agent-{node}", [
            sys.executable, "-m", "traceprobe_agent", "--node-name", node, "--interval", "1",
            "--metrics-port", str(metrics_port), "--cgroup-root", f"/{CGROUP_TREE}/{node}",
            "--map-endpoint", f"127.0.0.1:{self.ingest_port}"],
            self.tmp / f"agent-{node}.log", env=env, cwd=REPO)
        self.agents.append(agent)
        return agent

    def api_map(self, query: str = "") -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.http_port}/api/map{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.load(response))

    def stop(self) -> None:
        for proc in [*self.agents, *([self.map] if self.map else [])]:
            proc.stop()
        self.agents.clear()
