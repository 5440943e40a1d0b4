"""The agent pod the operator renders (the chart renders none) keeps to the least-privilege rules:
not privileged, no hostPID, ALL capabilities dropped and only BPF, PERFMON,
NET_ADMIN added (SYS_RESOURCE only on request, for kernels before 5.11), read-only
root filesystem, and only the host
mounts it needs, each justified in a comment. With the chart's values, it runs
the chart's agent image and ServiceAccount and reports to the chart's service map."""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness.chart import NON_DEFAULT, container, env_of, render
from harness.tools import REPO
from traceprobe_operator.agent_workload import ActiveProbe, render_daemonset
from traceprobe_operator.settings import OperatorSettings

CAPABILITIES = {"BPF", "PERFMON", "NET_ADMIN"}  # SYS_RESOURCE only with memlockCapability
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
    assert ("--map-endpoint=traceprobe-service-map-ingest.traceprobe-system.svc:14317"
            in agent["args"])
    # TLS to the map with the chart's CA, and a token for the map's audience only.
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["map-ca"]["secret"]["secretName"] == "traceprobe-service-map-tls"
    token = volumes["map-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "traceprobe-service-map"
    assert {"--map-ca-file=/etc/traceprobe/map-ca/ca.crt",
            "--map-token-file=/var/run/secrets/traceprobe/map/token"} <= set(agent["args"])
    assert ds["metadata"]["namespace"] == "traceprobe-system"
    assert ds["metadata"]["name"] == OperatorSettings().agent_daemonset


# --- what node-agent users expect of the chart: tolerations, priority, resources, rollout --

def _chart_daemonset(values: dict[str, Any] | None = None, sets: list[str] | None = None,
                     release: str = "traceprobe", namespace: str = "traceprobe-system",
                     ) -> dict[str, Any]:
    """The DaemonSet the operator renders from the chart's operator env (as it would run)."""
    docs = render(values, sets, release=release, namespace=namespace)
    operator = next(d for d in docs if d["kind"] == "Deployment"
                    and d["metadata"]["name"].endswith("-operator"))
    env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    settings = OperatorSettings.from_env({**env, "TRACEPROBE_NAMESPACE": namespace})
    return render_daemonset(settings, [ActiveProbe("TraceProbe", "shop", "web")])


def _tolerated(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    """Kubernetes' ToleratesTaint, for the taints below."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint["effect"]:
            continue
        if not t.get("key"):
            if t.get("operator") == "Exists":
                return True
            continue
        if t["key"] != taint["key"]:
            continue
        if t.get("operator") == "Exists" or t.get("value", "") == taint.get("value", ""):
            return True
    return False


TAINTS = [
    {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
    {"key": "dedicated", "value": "db", "effect": "NoExecute"},
]


def test_by_default_agents_go_everywhere_with_node_critical_priority() -> None:
    ds = _chart_daemonset()
    pod = ds["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists", "effect": "NoSchedule"},
                                  {"operator": "Exists", "effect": "NoExecute"}]
    for taint in TAINTS:
        assert _tolerated(pod["tolerations"], taint), taint
    assert pod["priorityClassName"] == "system-node-critical"
    [agent] = pod["containers"]
    assert agent["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                  "limits": {"memory": "1Gi"}}
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    # Metrics stay on the node's loopback, plain, with no port declared to the cluster.
    assert "--metrics-address=127.0.0.1" in agent["args"]
    assert "--metrics-port=9464" in agent["args"] and "--health-port=9465" in agent["args"]
    assert "ports" not in agent
    assert [e["name"] for e in agent["env"]] == ["NODE_NAME"]


def test_each_agent_value_reaches_the_daemonset() -> None:
    ds = _chart_daemonset(NON_DEFAULT, release="obs", namespace="observability")
    pod = ds["spec"]["template"]["spec"]
    assert pod["tolerations"] == NON_DEFAULT["agent"]["tolerations"]
    assert [_tolerated(pod["tolerations"], t) for t in TAINTS] == [
        False, False, True, False, False, False]
    assert _tolerated(pod["tolerations"], {"key": "dedicated", "value": "observability",
                                           "effect": "NoSchedule"})
    assert "priorityClassName" not in pod  # "" means none
    [agent] = pod["containers"]
    assert agent["resources"] == {"requests": {"cpu": "0.2", "memory": "300Mi"},
                                  "limits": {"cpu": "2", "memory": "1Gi"}}
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": "20%",
                                                             "maxSurge": 0}
    # On the node's IP: the downward API's status.hostIP, HTTPS, a port for PodMonitors.
    assert "--metrics-address=$(HOST_IP)" in agent["args"]
    assert {"name": "HOST_IP",
            "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}} in agent["env"]
    assert agent["ports"] == [{"name": "metrics", "containerPort": 19464, "hostPort": 19464,
                               "protocol": "TCP"}]
    assert "--metrics-port=19464" in agent["args"] and "--health-port=19465" in agent["args"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert "/dev/tcp/127.0.0.1/19465" in agent[probe]["exec"]["command"][-1]


def test_listen_all_binds_every_address_without_the_downward_api() -> None:
    [agent] = _chart_daemonset(sets=["agent.metrics.listen=all"])["spec"]["template"][
        "spec"]["containers"]
    assert "--metrics-address=0.0.0.0" in agent["args"]
    assert [e["name"] for e in agent["env"]] == ["NODE_NAME"]
    assert agent["ports"][0]["name"] == "metrics"


def test_agent_pod_has_exec_probes_on_the_loopback_health_port(pod: dict[str, Any]) -> None:
    """hostNetwork: an httpGet probe would go to the node's IP, where the probes are not."""
    [agent] = pod["containers"]
    ready, live = agent["readinessProbe"], agent["livenessProbe"]
    assert set(ready) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"exec"}
    assert "httpGet" not in live and "tcpSocket" not in live
    assert ready["exec"]["command"][:2] == ["bash", "-c"]
    assert "/readyz" in ready["exec"]["command"][2] and "/livez" in live["exec"]["command"][2]
    assert "127.0.0.1/9465" in ready["exec"]["command"][2]
    # Liveness gives a slow first compile room: ~initial delay + 3 failed periods.
    assert live["initialDelaySeconds"] + live["periodSeconds"] * live["failureThreshold"] >= 90
