"""Probes decide what a node observes: real agent, real eBPF, real API server.

A namespaced TraceProbe selecting two pods of its namespace: the node's other
pods, pods of another namespace and the node's own processes (the API server,
etcd, this test) are not accounted at all (the kernel's `unselected` counter
counts their connections instead); they appear only as the remote peer of a
selected pod. A second probe that selects more makes those pods' next
connections count, without a restart.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from harness.install import apply_cluster_probe, apply_probe, ensure_node, install
from harness.metrics import by_label
from harness.pods import Pod, PodFactory
from harness.procs import ManagedProcess, free_port
from harness.traffic_control import dial, serve, stop
from harness.waiting import wait_until
from harness.world import OperatorWorld

NODE = "tp-scope-node"
SELECTED = "podSelector: {matchExpressions: [{key: app, operator: In, values: [web, db]}]}"


@pytest.fixture(scope="module")
def world(control_plane: Any, bpf_ready: None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorWorld]:
    install(control_plane)
    ensure_node(control_plane, NODE, {"kubernetes.io/os": "linux", "traceprobe-e2e": "scope"})
    w = OperatorWorld(control_plane, tmp_path_factory.mktemp("scope-world"))
    yield w
    w.stop()


def _spec(selector: str) -> str:
    """A probe for this test's node, every second, with `selector` (flow-style YAML)."""
    return f"{{nodeSelector: {{traceprobe-e2e: scope}}, interval: 1s, {selector}}}"


class Agent:
    def __init__(self, proc: ManagedProcess, metrics_port: int) -> None:
        self.proc = proc
        self.metrics_port = metrics_port

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.proc.log.read_text().splitlines()
                if line.startswith('{"node"')]

    def unselected(self) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return by_label(text, "traceprobe_agent_kernel_drops_total", "cause")["unselected"]


def _opened(records: list[dict[str, Any]], pod: Pod, role: str) -> int:
    return sum(r["opened"] for r in records if r.get("k8sPodUid") == pod.uid
               and r["role"] == role)


def _knows(world: OperatorWorld, probe: str, generation: int = 1) -> bool:
    report = world.node_report(NODE) or {}
    return any(e["probe"]["name"] == probe and e["state"] == "Attached"
               and e["probe"]["generation"] == generation
               for e in (report.get("status") or {}).get("probes") or [])


def test_a_namespaced_probe_accounts_only_the_pods_it_selects(world: OperatorWorld) -> None:
    port = free_port()
    agent = Agent(world.start_agent(NODE, "scope-agent", metrics_port=port), port)
    pods = PodFactory(world.cp.api_client(), node=NODE)
    server = None
    try:
        web = pods.create("web-5f-a", "shop", {"app": "web"}, ("Deployment", "web"))
        other = pods.create("other-5f-b", "shop", {"app": "other"}, ("Deployment", "other"))
        outsider = pods.create("web-5f-c", "lab", {"app": "web"}, ("Deployment", "web"))
        db = pods.create("db-0", "shop", {"app": "db"}, ("StatefulSet", "db"))
        apply_probe(world.cp, "scope", "shop", _spec(SELECTED))
        wait_until(lambda: _knows(world, "scope"), timeout=90, what="probe attached")
        server = serve(db, 5432, 64)
        before = agent.unselected()
        truth = {p.name: dial(p, db.ip, 5432, 16, "--count", str(n))["completed"]
                 for p, n in ((web, 2), (other, 3), (outsider, 4))}
        assert truth == {web.name: 2, other.name: 3, outsider.name: 4}

        # The selected server sees all nine: the others are its remote peers.
        wait_until(lambda: _opened(agent.records(), db, "server") >= 9, timeout=30,
                   what="db's server side counts every caller")
        records = agent.records()
        assert _opened(records, db, "server") == 9
        assert _opened(records, web, "client") == 2
        callers = {r["remoteIp"] for r in records if r.get("k8sPodUid") == db.uid}
        assert {other.ip, outsider.ip} <= callers
        # Nothing else of this node was accounted: not the unselected pods, not
        # the node's own processes (API server, etcd, this test's harness).
        assert {r.get("k8sPodUid") for r in records} == {web.uid, db.uid}, {
            (r.get("k8sPod"), r.get("comm"), r.get("cgroupPath")) for r in records
            if r.get("k8sPodUid") not in (web.uid, db.uid)}
        assert agent.unselected() - before >= 3 + 4  # their connect()s, skipped in the kernel

        # A second probe selects the other namespace: its next connections count.
        apply_cluster_probe(world.cp, "lab", _spec(
            "namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: lab}}"))
        wait_until(lambda: _knows(world, "lab"), timeout=60, what="second probe attached")
        assert dial(outsider, db.ip, 5432, 16, "--count", "2")["completed"] == 2
        wait_until(lambda: _opened(agent.records(), outsider, "client") == 2, timeout=30,
                   what="the newly selected pod's calls")
        # Widening the first probe's selector works the same way.
        apply_probe(world.cp, "scope", "shop", _spec(
            "podSelector: {matchExpressions: [{key: app, operator: In,"
            " values: [web, db, other]}]}"))
        wait_until(lambda: _knows(world, "scope", generation=2), timeout=60,
                   what="generation 2 of the probe applied")
        assert dial(other, db.ip, 5432, 16, "--count", "1")["completed"] == 1
        wait_until(lambda: _opened(agent.records(), other, "client") == 1, timeout=30,
                   what="the pod the wider selector takes in")
        assert agent.proc.alive() and "Traceback" not in agent.proc.log.read_text()
    finally:
        if server is not None:
            stop(server)
        pods.cleanup()
        world.cp.kubectl("delete", "traceprobe", "scope", "-n", "shop", "--ignore-not-found")
        world.cp.kubectl("delete", "clustertraceprobe", "lab", "--ignore-not-found")
