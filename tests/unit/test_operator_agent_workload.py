from __future__ import annotations

import json

import pytest

from traceprobe_operator.agent_workload import (
    CONFIG_HASH_ANNOTATION,
    ActiveProbe,
    node_affinity,
    render_daemonset,
)
from traceprobe_operator.settings import AGENT_POD_ENV, AgentPodSettings, OperatorSettings


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
    assert sec["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON", "NET_ADMIN"]}
    assert "hostPID" not in pod
    assert {v["name"] for v in pod["volumes"]} == {"tracefs", "modules", "usr-src", "cgroup",
                                                   "tmp"}


def test_config_hash_rolls_on_every_agent_pod_setting() -> None:
    a = ActiveProbe("TraceProbe", "shop", "a")
    base = _hash(render_daemonset(OperatorSettings(), [a]))
    changes = [
        {"tolerations": []},
        {"tolerations": [{"key": "dedicated", "operator": "Exists"}]},
        {"priorityClassName": ""},
        {"priorityClassName": "observability"},
        {"resources": {"requests": {"memory": "256Mi"}}},
        {"updateStrategy": {"maxUnavailable": "10%"}},
        {"healthPort": 9470},
        {"metrics": {"listen": "hostIP"}},
        {"metrics": {"port": 9470}},
    ]
    seen = {base}
    for change in changes:
        pod = AgentPodSettings.model_validate(change)
        digest = _hash(render_daemonset(OperatorSettings(agent_pod=pod), [a]))
        assert digest not in seen, change
        seen.add(digest)


def test_agent_pod_setting_parses_the_charts_json() -> None:
    pod = AgentPodSettings.from_json(json.dumps({
        "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute",
                         "tolerationSeconds": 30}],
        "priorityClassName": "", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}},
        "updateStrategy": {"maxUnavailable": "25%"}, "healthPort": 1000,
        "metrics": {"listen": "all", "port": 1001}}))
    assert pod.tolerations[0].toleration_seconds == 30
    assert pod.resources.limits == {"cpu": "1", "memory": "1Gi"}
    assert pod.update_strategy.max_unavailable == "25%"
    assert OperatorSettings.from_env({AGENT_POD_ENV: pod.model_dump_json(by_alias=True)}
                                     ).agent_pod == pod
    assert OperatorSettings.from_env({}).agent_pod == AgentPodSettings()


@pytest.mark.parametrize("text,message", [
    ("{", "TRACEPROBE_AGENT_POD is not JSON"),
    ('{"toleration": []}', "at 'toleration': Extra inputs are not permitted"),
    ('{"tolerations": [{"operator": "Exists", "effect": "Sometimes"}]}',
     "at 'tolerations.0.effect': Input should be 'NoSchedule', 'PreferNoSchedule' or "
     "'NoExecute'"),
    ('{"tolerations": [{"operator": "Equal", "value": "x"}]}',
     "a toleration without a key needs operator Exists"),
    ('{"tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 5}]}',
     "tolerationSeconds applies only to effect NoExecute"),
    ('{"resources": {"limits": {"memory": "lots"}}}', "at 'resources.limits.memory'"),
    ('{"updateStrategy": {"maxUnavailable": 0}}', "maxUnavailable must be at least 1"),
    ('{"updateStrategy": {"maxUnavailable": "101%"}}', "at 'updateStrategy.maxUnavailable"),
    ('{"metrics": {"listen": "everywhere"}}', "at 'metrics.listen'"),
    ('{"healthPort": 9464}', "healthPort and metrics.port must differ"),
    ('{"priorityClassName": "Not_A_Name"}',
     "at 'priorityClassName': 'Not_A_Name' is not a valid object name"),
    ('{"tolerations": [{"operator": "Exists", "value": "x"}]}',
     "at 'tolerations.0': a toleration with operator Exists takes no value"),
])
def test_a_bad_agent_pod_setting_names_the_variable_and_the_field(text: str,
                                                                   message: str) -> None:
    with pytest.raises(ValueError) as error:
        OperatorSettings.from_env({AGENT_POD_ENV: text})
    assert str(error.value).startswith("TRACEPROBE_AGENT_POD is not")
    assert message in str(error.value)


def test_sys_resource_only_when_asked_for_old_kernels() -> None:
    settings = OperatorSettings(agent_pod=AgentPodSettings(memlock_capability=True))
    sec = render_daemonset(settings, [])["spec"]["template"]["spec"]["containers"][0][
        "securityContext"]
    assert sec["capabilities"]["add"] == ["BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE"]
    assert AgentPodSettings.from_json('{"memlockCapability": true}').memlock_capability


def test_map_tls_and_token_are_mounted_only_when_configured() -> None:
    plain = render_daemonset(OperatorSettings(), [])["spec"]["template"]["spec"]
    assert not [a for a in plain["containers"][0]["args"] if "--map-ca" in a or "token" in a]
    settings = OperatorSettings(map_ca_secret="map-tls", map_token_audience="the-map")
    pod = render_daemonset(settings, [])["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    # Only the CA of the map's Secret reaches the agents, never the map's key.
    assert volumes["map-ca"]["secret"] == {"secretName": "map-tls",
                                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    token = volumes["map-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "the-map" and token["expirationSeconds"] >= 600
    assert f"--map-ca-file={mounts['map-ca']['mountPath']}/ca.crt" in container["args"]
    assert f"--map-token-file={mounts['map-token']['mountPath']}/{token['path']}" in (
        container["args"])
    assert all(m["readOnly"] for m in (mounts["map-ca"], mounts["map-token"]))
    assert _hash(render_daemonset(settings, [])) != _hash(render_daemonset(OperatorSettings(), []))
