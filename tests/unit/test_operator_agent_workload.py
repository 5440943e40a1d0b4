from __future__ import annotations

from traceprobe_operator.agent_workload import (
    CONFIG_HASH_ANNOTATION,
    ActiveProbe,
    node_affinity,
    render_daemonset,
)
from traceprobe_operator.settings import OperatorSettings


def _hash(ds: dict) -> str:  # type: ignore[type-arg]
    return str(ds["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION])


def test_affinity_is_union_of_selectors_and_none_when_any_selects_all() -> None:
    linux = ActiveProbe("ClusterTraceProbe", None, "a", {"kubernetes.io/os": "linux"})
    gpu = ActiveProbe("TraceProbe", "shop", "b", {"pool": "gpu", "zone": "z1"})
    terms = node_affinity([linux, gpu, linux])["nodeAffinity"][  # type: ignore[index]
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]},
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]},
                              {"key": "zone", "operator": "In", "values": ["z1"]}]}]
    assert node_affinity([linux, ActiveProbe("TraceProbe", "x", "all")]) is None


def test_config_hash_rolls_only_on_agent_relevant_change() -> None:
    settings = OperatorSettings()
    a = ActiveProbe("TraceProbe", "shop", "a", {"pool": "web"})
    base = render_daemonset(settings, [a])
    assert _hash(base) == _hash(render_daemonset(settings, [a]))
    # A second probe on the same nodes changes nothing the agent pods need.
    assert _hash(base) == _hash(render_daemonset(settings, [a, ActiveProbe(
        "TraceProbe", "other", "b", {"pool": "web"})]))
    assert _hash(base) != _hash(render_daemonset(settings, [a, ActiveProbe(
        "TraceProbe", "other", "b", {"pool": "db"})]))
    newer = OperatorSettings(agent_image="registry.example/agent:0.2.0")
    assert _hash(base) != _hash(render_daemonset(newer, [a]))


def test_agent_pod_is_least_privilege() -> None:
    ds = render_daemonset(OperatorSettings(), [])
    pod = ds["spec"]["template"]["spec"]
    sec = pod["containers"][0]["securityContext"]
    assert sec["privileged"] is False and sec["readOnlyRootFilesystem"] is True
    assert sec["capabilities"] == {"drop": ["ALL"],
                                   "add": ["BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE"]}
    assert "hostPID" not in pod
    assert {v["name"] for v in pod["volumes"]} == {"tracefs", "modules", "usr-src", "cgroup",
                                                   "tmp"}
