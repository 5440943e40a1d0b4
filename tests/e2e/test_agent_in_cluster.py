"""Operator + real node agent + real API server: a probe becomes programs in the
kernel, the agent's NodeReport makes the probe Ready, deletion detaches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from harness.bpf import held_ids
from harness.install import apply_probe, ensure_node, install
from harness.pods import PodFactory
from harness.traffic_control import dial, serve, stop
from harness.waiting import wait_until
from harness.world import GROUP, VERSION, OperatorWorld

NODE = "tp-agent-node"


@pytest.fixture(scope="module")
def world(control_plane: Any, bpf_ready: None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorWorld]:
    install(control_plane)
    ensure_node(control_plane, NODE, {"kubernetes.io/os": "linux", "traceprobe-e2e": "agent"})
    w = OperatorWorld(control_plane, tmp_path_factory.mktemp("agent-world"))
    w.start_operator(detach_timeout=120)  # long: only the agent's report may release
    yield w
    w.stop()


def _entry(world: OperatorWorld, probe: str) -> dict[str, Any]:
    report = world.node_report(NODE) or {}
    return next((e for e in (report.get("status") or {}).get("probes") or []
                 if e["probe"]["name"] == probe), {})


def test_probe_to_kernel_to_ready_and_back(world: OperatorWorld) -> None:
    agent = world.start_agent(NODE)
    report = wait_until(lambda: world.node_report(NODE), what="the agent's NodeReport")
    assert report["spec"]["nodeName"] == NODE

    apply_probe(world.cp, "edge", "shop", "{nodeSelector: {traceprobe-e2e: agent}}")
    entry = wait_until(lambda: _entry(world, "edge").get("state") == "Attached"
                       and _entry(world, "edge"), timeout=60, what="probe Attached on node")
    assert "cgroup/on_sock_ops" in entry["programsAttached"]  # the sock_ops core loads here
    assert len(held_ids(agent.pid)) == len(entry["programsAttached"])
    wait_until(lambda: world.condition("edge", "Ready").get("status") == "True",
               what="operator sees the real agent's report: Ready")
    assert world.probe("edge")["status"]["nodesReady"] == "1/1"
    status = (world.node_report(NODE) or {})["status"]
    assert status["kernelFeatures"]["tracepoint:sock:inet_sock_set_state"] is True
    assert status["headerSource"] and status["probesAttached"] == "1/1"
    assert status["connectionCore"] == "sock_ops" and "connectionCoreReason" not in status

    # Local sides are named from this node's pods (cgroup → pod UID → Pod).
    pods = PodFactory(world.cp.api_client(), node=NODE)
    try:
        web = pods.create("web-7d9f-abcde", "shop", owner=("Deployment", "web"))
        db = pods.create("db-0", "shop", owner=("StatefulSet", "db"))
        server = serve(db, 5432, 64)
        try:
            assert dial(web, db.ip, 5432, 32, "--count", "2")["completed"] == 2
        finally:
            stop(server)

        def named() -> list[dict[str, Any]]:
            lines = [json.loads(line) for line in agent.log.read_text().splitlines()
                     if line.startswith('{"node"')]
            return [r for r in lines if r.get("k8sPod") in (web.name, db.name)]

        records = wait_until(lambda: len({r["role"] for r in named()}) == 2 and named(),
                             timeout=30, what="records naming both pods")
        client = next(r for r in records if r["role"] == "client")
        server_side = next(r for r in records if r["role"] == "server")
        assert (client["k8sNamespace"], client["k8sWorkloadKind"], client["k8sWorkload"]) == (
            "shop", "Deployment", "web")
        assert (server_side["k8sPod"], server_side["k8sWorkloadKind"]) == ("db-0", "StatefulSet")
        assert client["remoteIp"] == db.ip and client["opened"] == 2
    finally:
        pods.cleanup()

    # A spec change applies without a restart: fewer kinds, fewer programs.
    apply_probe(world.cp, "edge", "shop",
                "{nodeSelector: {traceprobe-e2e: agent}, probes: [connections]}")
    wait_until(lambda: _entry(world, "edge").get("probe", {}).get("generation") == 2,
               timeout=60, what="generation 2 applied")
    assert len(_entry(world, "edge")["programsAttached"]) < len(entry["programsAttached"])
    assert agent.alive()

    # A probe for other nodes is not this agent's business.
    apply_probe(world.cp, "elsewhere", "shop", "{nodeSelector: {traceprobe-e2e: nowhere}}")
    wait_until(lambda: world.condition("elsewhere", "Ready").get("reason") == "NoMatchingNodes",
               what="NoMatchingNodes for a selector no node matches")
    assert _entry(world, "elsewhere") == {}

    # Deletion: the agent detaches and says so; the finalizer lets go well before
    # the operator's 120 s timeout, and the programs leave the kernel.
    world.custom.delete_namespaced_custom_object(GROUP, VERSION, "shop", "traceprobes", "edge")
    world.custom.delete_namespaced_custom_object(GROUP, VERSION, "shop", "traceprobes",
                                                 "elsewhere")
    wait_until(lambda: world.probe("edge") is None, timeout=30, what="probe deleted")
    wait_until(lambda: not held_ids(agent.pid), timeout=30, what="programs detached")
    assert agent.alive()
    assert "Traceback" not in agent.log.read_text()
