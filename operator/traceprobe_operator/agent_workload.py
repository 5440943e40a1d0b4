"""The agent DaemonSet the operator owns, rendered from the active probes (pure).

Agents read the probes that apply to their node themselves; what the operator
decides is *where* agents run (the union of the probes' node selectors) and
how they run. A hash of that decision sits on the pod template, so a change
rolls the DaemonSet and nothing else does.
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


def render_daemonset(settings: OperatorSettings, probes: list[ActiveProbe]) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "traceprobe-agent",
              "app.kubernetes.io/component": "node-agent"}
    affinity = node_affinity(probes)
    config = {"image": settings.agent_image, "affinity": affinity,
              "serviceAccount": settings.agent_service_account,
              "mapEndpoint": settings.map_endpoint}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": settings.agent_service_account,
        # conntrack lookups (Service NAT) need the node's network namespace. No
        # hostPID: processes are named from BPF (pid, comm, cgroup id), not /proc.
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "tolerations": [{"operator": "Exists"}],  # observe every node, tainted too
        "containers": [{
            "name": "agent", "image": settings.agent_image,
            "args": ["--node-name=$(NODE_NAME)", f"--map-endpoint={settings.map_endpoint}"],
            "env": [{"name": "NODE_NAME",
                     "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "securityContext": {
                "privileged": False, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                # BPF+PERFMON load and attach; NET_ADMIN reads conntrack;
                # SYS_RESOURCE raises the memlock limit on kernels before 5.11.
                "capabilities": {"drop": ["ALL"],
                                 "add": ["BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE"]}},
            "volumeMounts": [m for _, m in _MOUNTS] + [
                # The root filesystem is read-only; BCC unpacks kheaders and
                # writes compile scratch files under /tmp.
                {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [v for v, _ in _MOUNTS] + [
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if affinity:
        pod_spec["affinity"] = affinity
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": settings.agent_daemonset, "namespace": settings.namespace,
                     "labels": {**labels, **MANAGED_BY}},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": labels,
                                      "annotations": {CONFIG_HASH_ANNOTATION: config_hash}},
                         "spec": pod_spec},
        },
    }
