"""Two simulated nodes on one kernel: each agent keeps to its node's cgroup subtree."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from harness.pods import CGROUP_TREE, PodFactory
from harness.traffic_control import dial, serve, stop
from traceprobe_agent.agent import Agent, AgentConfig
from traceprobe_api.records import ConnectionRecord


@pytest.fixture
def node_b(control_plane: Any, pod_factory: Any) -> Iterator[PodFactory]:
    factory = PodFactory(control_plane.api_client(), node="node-b")
    yield factory
    factory.cleanup()


@pytest.mark.parametrize("core", ["sock_ops", "tracepoint"])
def test_each_agent_reports_only_its_nodes_side(bpf_ready: None, pod_factory: Any,
                                                node_b: PodFactory, core: str) -> None:
    seen: dict[str, list[ConnectionRecord]] = {"node-1": [], "node-b": []}
    # Pods first: the sock_ops core links at the node's subtree, which must exist.
    client = pod_factory.create("web-0", "multi", owner=("Deployment", "web"))
    server = node_b.create("db-0", "multi", owner=("StatefulSet", "db"))
    agents = [Agent(node, seen[node].extend, cgroup_root=f"/{CGROUP_TREE}/{node}", core=core)
              for node in seen]
    try:
        for agent in agents:
            agent.apply(AgentConfig(frozenset({"connections", "bytes"}), 4096, 1.0))
        proc: subprocess.Popen[str] = serve(server, 5432, 100)
        try:
            truth = dial(client, server.ip, 5432, 10, "--count", "3")
        finally:
            stop(proc)
        assert truth["completed"] == 3
        for agent in agents:
            agent.tick()
    finally:
        for agent in agents:
            agent.close()
    node1 = [r for r in seen["node-1"] if r.remote_ip == server.ip]
    nodeb = [r for r in seen["node-b"] if r.local_ip == server.ip]
    assert {(r.role, r.cgroup_id) for r in node1} == {("client", client.cgroup_id)}
    assert {(r.role, r.cgroup_id) for r in nodeb} == {("server", server.cgroup_id)}
    assert sum(r.opened for r in node1) == sum(r.opened for r in nodeb) == 3
    # Neither node reports the other's side, though both kernels' views are the same.
    assert not [r for r in seen["node-1"] if r.cgroup_id == server.cgroup_id]
    assert not [r for r in seen["node-b"] if r.cgroup_id == client.cgroup_id]
    if core == "tracepoint":  # sees every process; keeps to its subtree in user space
        assert agents[0].stats.foreign_records > 0
    else:  # linked at its subtree: the kernel runs it for that node's processes only
        assert agents[0].stats.foreign_records == 0
