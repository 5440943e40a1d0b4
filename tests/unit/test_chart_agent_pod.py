"""The agent pod the operator renders (the chart renders none) keeps to the least-privilege rules:
not privileged, no hostPID, ALL capabilities dropped and only BPF, PERFMON,
NET_ADMIN and SYS_RESOURCE added, read-only root filesystem, and only the host
mounts it needs, each justified in a comment. With the chart's values, it runs
the chart's agent image and ServiceAccount and reports to the chart's service map."""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness.chart import container, env_of, render
from harness.tools import REPO
from traceprobe_operator.agent_workload import ActiveProbe, render_daemonset
from traceprobe_operator.settings import OperatorSettings

CAPABILITIES = {"BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE"}
# Host path -> (mount path, read-only): exactly these.
HOST_MOUNTS = {
    "/sys/kernel/tracing": ("/sys/kernel/tracing", False),
    "/lib/modules": ("/lib/modules", True),
    "/usr/src": ("/usr/src", True),
    "/sys/fs/cgroup": ("/sys/fs/cgroup", True),
}


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    ds = render_daemonset(OperatorSettings(), [ActiveProbe("TraceProbe", "shop", "web")])
    spec: dict[str, Any] = ds["spec"]["template"]["spec"]
    return spec


def test_agent_pod_is_not_privileged(pod: dict[str, Any]) -> None:
    assert "hostPID" not in pod and "hostIPC" not in pod
    assert pod["hostNetwork"] is True  # conntrack: justified in agent_workload
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # so the map's Service name resolves
    [agent] = pod["containers"]
    sc = agent["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == CAPABILITIES
    assert not pod.get("initContainers")


def test_agent_pod_mounts_only_what_it_needs(pod: dict[str, Any]) -> None:
    [agent] = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    assert volumes.keys() == mounts.keys()
    seen = {}
    tmp = volumes.pop("tmp")
    assert tmp["emptyDir"]["sizeLimit"] and mounts.pop("tmp")["mountPath"] == "/tmp"
    for name, volume in volumes.items():
        assert set(volume) == {"name", "hostPath"}, f"{name}: only hostPath volumes expected"
        seen[volume["hostPath"]["path"]] = (mounts[name]["mountPath"], mounts[name]["readOnly"])
    assert seen == HOST_MOUNTS


def test_each_host_mount_and_host_namespace_is_justified_in_a_comment() -> None:
    source = (REPO / "operator/traceprobe_operator/agent_workload.py").read_text()
    lines = source.splitlines()
    for index, line in enumerate(lines):
        call = re.search(r'_host_path\("([^"]+)"', line)
        if not call or line.lstrip().startswith("def "):
            continue
        block = []
        for above in reversed(lines[:index]):  # the comment block above, skipping siblings
            stripped = above.strip()
            if stripped.startswith("#"):
                block.append(stripped)
            elif not stripped.startswith("_host_path("):
                break
        assert block, f"mount {call.group(1)} has no comment saying why it is needed"
    host_network = next(i for i, line in enumerate(lines) if '"hostNetwork": True' in line)
    assert "conntrack" in lines[host_network - 2] + lines[host_network - 1]
    capabilities = next(i for i, line in enumerate(lines) if '"capabilities"' in line)
    comment = " ".join(lines[capabilities - 3:capabilities])
    for capability in ("BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE"):
        assert capability in comment, f"{capability} not justified next to the capabilities"


def test_with_the_charts_values_the_agent_runs_the_charts_image_account_and_map() -> None:
    docs = render(sets=["agent.image.tag=1.2.3", "serviceMap.ingestPort=14317"])
    env = env_of(container(docs, "traceprobe-operator"))
    settings = OperatorSettings.from_env({**env, "TRACEPROBE_NAMESPACE": "traceprobe-system"})
    ds = render_daemonset(settings, [ActiveProbe("TraceProbe", "shop", "web")])
    [agent] = ds["spec"]["template"]["spec"]["containers"]
    assert agent["image"] == "ghcr.io/traceprobe/traceprobe-agent:1.2.3"
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "traceprobe-agent"
    assert "--map-endpoint=traceprobe-service-map.traceprobe-system.svc:14317" in agent["args"]
    assert ds["metadata"]["namespace"] == "traceprobe-system"
    assert ds["metadata"]["name"] == OperatorSettings().agent_daemonset
