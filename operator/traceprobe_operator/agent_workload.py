"""The agent DaemonSet the operator owns, rendered from the active probes (pure).

Agents read the probes that apply to their node themselves; what the operator
decides is *where* agents run (the union of the probes' node selectors) and
how they run (image, ServiceAccount, the service map's address, and the chart's
`agent.*` values: tolerations, priority class, resources, update strategy,
metrics listener). A hash of the whole rendering sits on the pod template, so a
change rolls the DaemonSet and nothing else does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from traceprobe_operator.settings import OperatorSettings

CONFIG_HASH_ANNOTATION = "traceprobe.io/agent-config-hash"
MANAGED_BY = {"app.kubernetes.io/managed-by": "traceprobe-operator"}


@dataclass(frozen=True)
class ActiveProbe:
    kind: str  # TraceProbe or ClusterTraceProbe
    namespace: str | None
    name: str
    node_selector: dict[str, str] = field(default_factory=dict)


def node_affinity(probes: list[ActiveProbe]) -> dict[str, Any] | None:
    """Nodes any probe selects: one ORed term per probe; None when one selects all."""
    if not probes or any(not p.node_selector for p in probes):
        return None
    terms = []
    seen: set[str] = set()
    for probe in probes:
        term = {"matchExpressions": [{"key": k, "operator": "In", "values": [v]}
                                     for k, v in sorted(probe.node_selector.items())]}
        key = json.dumps(term, sort_keys=True)
        if key not in seen:
            seen.add(key)
            terms.append(term)
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": terms}}}


def _host_path(name: str, path: str, mount: str, read_only: bool) -> tuple[dict[str, Any], ...]:
    return ({"name": name, "hostPath": {"path": path}},
            {"name": name, "mountPath": mount, "readOnly": read_only})


# The host paths the agent mounts, each for one reason (a container's own /sys
# shows neither tracefs nor bpffs, and its /sys/fs/cgroup only its own cgroup):
_MOUNTS = (
    # tracefs: tracepoint ids and formats BCC reads to attach; writable only for
    # kprobe fallbacks, which register probes by writing kprobe_events.
    _host_path("tracefs", "/sys/kernel/tracing", "/sys/kernel/tracing", False),
    # No bpffs: the programs pin nothing; they die with the agent by design.
    # Kernel headers for BCC's compile: /lib/modules/$(uname -r)/{build,source}
    # are links into /usr/src, so both are mounted where the links expect them
    # (read-only; the image carries Debian's headers as a fallback).
    _host_path("modules", "/lib/modules", "/lib/modules", True),
    _host_path("usr-src", "/usr/src", "/usr/src", True),
    # cgroupfs (read-only): cgroup ids from BPF -> cgroup paths -> pod UIDs.
    _host_path("cgroup", "/sys/fs/cgroup", "/sys/fs/cgroup", True),
)


#: Where the agent's /metrics listens, by `agent.metrics.listen` (HOST_IP: the
#: downward API's status.hostIP, which for a hostNetwork pod is also its pod IP).
METRICS_ADDRESS = {"loopback": "127.0.0.1", "hostIP": "$(HOST_IP)", "all": "0.0.0.0"}


def health_check(port: int, path: str) -> list[str]:
    """The kubelet's exec probe: GET `path` from the agent's plain-HTTP health listener
    on the node's 127.0.0.1, succeeding on 200.

    An httpGet probe would connect to the pod IP, which for a hostNetwork pod is the
    node's IP, where nothing of the agent listens unless metrics are opened there (and
    then only HTTPS); its `host: 127.0.0.1` escape is refused by the Baseline pod
    security profile since Kubernetes 1.34. bash's /dev/tcp (bash is Essential in
    Debian, so in the image) costs a few milliseconds a run; a Python one-liner ~60.
    """
    # Reads the response to its end (builtins only, no fork) so the agent never writes
    # to a closed socket; the exit status is the status line's verdict.
    script = (f"exec 3<>/dev/tcp/127.0.0.1/{port} && "
              f"printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && "
              "read -r -t 5 _ code _ <&3 && while read -r -t 5 _ <&3; do :; done; "
              '[ "$code" = 200 ]')
    return ["bash", "-c", script]


#: Where the agent finds the map's CA and its own token for the map (the volumes below).
MAP_CA_DIR, MAP_TOKEN_DIR = "/etc/traceprobe/map-ca", "/var/run/secrets/traceprobe/map"
#: The kubelet renews a projected token at 80 % of its life; an hour is the API's default.
MAP_TOKEN_SECONDS = 3600


def _map_credentials(settings: OperatorSettings) -> tuple[list[str], list[dict[str, Any]],
                                                          list[dict[str, Any]]]:
    """(agent args, volumes, mounts) for TLS to the map and the token it checks."""
    args: list[str] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if settings.map_ca_secret:
        args.append(f"--map-ca-file={MAP_CA_DIR}/ca.crt")
        # Only the CA: the Secret may also hold the map's own key, which agents never need.
        volumes.append({"name": "map-ca", "secret": {
            "secretName": settings.map_ca_secret, "items": [{"key": "ca.crt",
                                                             "path": "ca.crt"}]}})
        mounts.append({"name": "map-ca", "mountPath": MAP_CA_DIR, "readOnly": True})
    if settings.map_token_audience:
        args.append(f"--map-token-file={MAP_TOKEN_DIR}/token")
        # Bound to the pod (so to its node): the map takes the node from it.
        volumes.append({"name": "map-token", "projected": {"sources": [{
            "serviceAccountToken": {"audience": settings.map_token_audience,
                                    "expirationSeconds": MAP_TOKEN_SECONDS,
                                    "path": "token"}}]}})
        mounts.append({"name": "map-token", "mountPath": MAP_TOKEN_DIR, "readOnly": True})
    return args, volumes, mounts


def _config_hash(daemonset: dict[str, Any]) -> str:
    """Of everything rendered, so whatever changes in it rolls the pods."""
    return hashlib.sha256(json.dumps(daemonset, sort_keys=True).encode()).hexdigest()[:16]


def render_daemonset(settings: OperatorSettings, probes: list[ActiveProbe]) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "traceprobe-agent",
              "app.kubernetes.io/component": "node-agent"}
    pod = settings.agent_pod
    affinity = node_affinity(probes)
    metrics = pod.metrics
    env = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    if metrics.listen == "hostIP":
        env.append({"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}})
    map_args, map_volumes, map_mounts = _map_credentials(settings)
    container: dict[str, Any] = {
        "name": "agent", "image": settings.agent_image,
        "args": ["--node-name=$(NODE_NAME)", f"--map-endpoint={settings.map_endpoint}",
                 *map_args, f"--metrics-address={METRICS_ADDRESS[metrics.listen]}",
                 f"--metrics-port={metrics.port}", f"--health-port={pod.health_port}"],
        "env": env,
        "securityContext": {
            "privileged": False, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            # BPF+PERFMON load and attach; NET_ADMIN reads conntrack; SYS_RESOURCE
            # (opt-in) raises the memlock limit, needed on kernels before 5.11 only.
            "capabilities": {"drop": ["ALL"], "add": [
                "BPF", "PERFMON", "NET_ADMIN", *(["SYS_RESOURCE"] if pod.memlock_capability
                                                 else [])]}},
        "resources": pod.resources.to_dict(),
        # Ready: the probes' programs run here (what a rollout waits for before it
        # moves on). Live: the agent's loop goes round (a compile may hold it a while).
        "readinessProbe": {"exec": {"command": health_check(pod.health_port, "/readyz")},
                           "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"exec": {"command": health_check(pod.health_port, "/livez")},
                          "initialDelaySeconds": 10, "periodSeconds": 30, "timeoutSeconds": 5,
                          "failureThreshold": 3},
        "volumeMounts": [m for _, m in _MOUNTS] + [
            # The root filesystem is read-only; BCC unpacks kheaders and
            # writes compile scratch files under /tmp.
            {"name": "tmp", "mountPath": "/tmp"}, *map_mounts],
    }
    if metrics.listen != "loopback":
        # Declared for PodMonitor discovery; a hostNetwork pod's port is the node's.
        container["ports"] = [{"name": "metrics", "containerPort": metrics.port,
                               "hostPort": metrics.port, "protocol": "TCP"}]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": settings.agent_service_account,
        # conntrack lookups (Service NAT) need the node's network namespace. No
        # hostPID: processes are named from BPF (pid, comm, cgroup id), not /proc.
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        # Observe every node a probe selects, tainted ones (control plane) included.
        "tolerations": [t.to_dict() for t in pod.tolerations],
        "containers": [container],
        "volumes": [v for v, _ in _MOUNTS] + [
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}, *map_volumes],
    }
    if pod.priority_class_name:
        pod_spec["priorityClassName"] = pod.priority_class_name
    if affinity:
        pod_spec["affinity"] = affinity
    daemonset: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": settings.agent_daemonset, "namespace": settings.namespace,
                     "labels": {**labels, **MANAGED_BY}},
        "spec": {
            "selector": {"matchLabels": labels},
            # No surge: a second agent on a node would want the same host ports and
            # count the node's traffic twice.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {
                "maxUnavailable": pod.update_strategy.max_unavailable, "maxSurge": 0}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    daemonset["spec"]["template"]["metadata"]["annotations"] = {
        CONFIG_HASH_ANNOTATION: _config_hash(daemonset)}
    return daemonset
