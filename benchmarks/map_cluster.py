"""A synthetic cluster for the service-map scale benchmark (deterministic, seeded).

Pods spread over nodes and namespaces, owned by workloads of every kind
(Deployments through pod-template-hash ReplicaSets, StatefulSets, DaemonSets,
one of them hostNetwork, Jobs owned by CronJobs, bare Pods), Services with
ClusterIPs and EndpointSlices, nodes with InternalIPs, a few probes. `api_objects`
renders them as the plain dicts the API server sends, `load` feeds those through
the real `MetadataCache` handlers.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from traceprobe_map.metadata import MetadataCache
from traceprobe_map.peers import Peer

T0 = 1_700_000_000.0  # first bucket's start (a multiple of the 10 s bucket)
_POD_NET, _SVC_NET = int(IPv4Address("10.128.0.0")), int(IPv4Address("10.96.0.0"))
_WORDS = ("api", "web", "cart", "auth", "search", "orders", "billing", "users", "catalog",
          "media", "notify", "ledger", "quote", "ship", "stock", "report", "feed", "score")
_SERVER_PORTS = {"Deployment": 8080, "StatefulSet": 5432}
_CLUSTER_IP = "ClusterIP"


@dataclass(frozen=True)
class SimNode:
    name: str
    ip: str


@dataclass
class SimWorkload:
    namespace: str
    kind: str  # top controller: Deployment, StatefulSet, DaemonSet, CronJob or Pod
    name: str
    host_network: bool = False
    pods: list[SimPod] = field(default_factory=list)

    @property
    def peer(self) -> Peer:
        """How the map names it (a Job's pods roll up to their CronJob)."""
        return Peer("workload", self.name, self.namespace, self.kind)

    @property
    def port(self) -> int:
        return _SERVER_PORTS.get(self.kind, 8080)


@dataclass(frozen=True)
class SimPod:
    uid: str
    name: str
    workload: SimWorkload
    node: SimNode
    ip: str  # the node's for hostNetwork pods
    owner: tuple[str, str] | None  # controller reference (kind, name)
    agent_name: tuple[str, str]  # (kind, name) the agent's workload_of gives
    template_hash: str | None = None

    @property
    def cgroup_path(self) -> str:  # systemd driver naming
        uid = self.uid.replace("-", "_")
        return (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"
                f"/cri-containerd-{self.uid.replace('-', '')}.scope")


@dataclass
class SimService:
    namespace: str
    name: str
    cluster_ip: str
    port: int
    backend: SimWorkload

    @property
    def peer(self) -> Peer:
        return Peer("service", self.name, self.namespace)


@dataclass
class Cluster:
    nodes: list[SimNode]
    namespaces: list[str]
    workloads: list[SimWorkload]
    services: list[SimService]
    seed: int

    @property
    def pods(self) -> list[SimPod]:
        return [p for w in self.workloads for p in w.pods]

    def of_kind(self, *kinds: str) -> list[SimWorkload]:
        return [w for w in self.workloads if w.kind in kinds and not w.host_network]


def build_cluster(pods: int = 5000, nodes: int = 50, namespaces: int = 20,
                  services: int = 500, seed: int = 1) -> Cluster:
    rng = random.Random(seed)
    node_list = [SimNode(f"node-{i:03d}", str(IPv4Address(int(IPv4Address("192.168.0.10")) + i)))
                 for i in range(nodes)]
    ns_list = ["kube-system", "monitoring", "ingress"] + [f"team-{i:02d}"
                                                         for i in range(namespaces - 3)]
    on_node = [0] * nodes
    workloads: list[SimWorkload] = []

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def suffix(n: int = 5) -> str:
        return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))

    def add_pod(w: SimWorkload, node: int, name: str, owner: tuple[str, str] | None,
                agent: tuple[str, str], template_hash: str | None = None) -> None:
        host = node_list[node]
        ip = host.ip if w.host_network else str(IPv4Address(_POD_NET + node * 1024
                                                            + 2 + on_node[node]))
        on_node[node] += 1
        w.pods.append(SimPod(uid(), name, w, host, ip, owner, agent, template_hash))

    # DaemonSets on every node (the last one hostNetwork, like most node agents).
    for name, host_net in (("log-shipper", False), ("csi-node", False), ("node-agent", True)):
        ds = SimWorkload("kube-system", "DaemonSet", name, host_network=host_net)
        for i in range(nodes):
            add_pod(ds, i, f"{name}-{suffix()}", ("DaemonSet", name), ("DaemonSet", name))
        workloads.append(ds)
    fixed = [("monitoring", "Deployment", "prometheus", 2),
             ("monitoring", "Deployment", "metrics-agent", 3),
             ("kube-system", "Deployment", "coredns", 2)]
    fixed += [("ingress", "Deployment", f"ingress-{i}", 4) for i in range(3)]
    total = sum(len(w.pods) for w in workloads)
    serial = 0
    while total < pods:
        if fixed:
            ns, kind, name, replicas = fixed.pop(0)
        else:
            ns = rng.choice(ns_list[3:])
            kind = rng.choices(("Deployment", "StatefulSet", "CronJob", "Pod"),
                               (70, 15, 10, 5))[0]
            replicas = {"Deployment": rng.choice((1, 2, 2, 3, 3, 3, 5, 8, 12)),
                        "StatefulSet": rng.choice((1, 3, 3, 5)),
                        "CronJob": rng.choice((1, 1, 2)), "Pod": 1}[kind]
            name = f"{rng.choice(_WORDS)}-{serial}"
            serial += 1
        replicas = min(replicas, pods - total)
        w = SimWorkload(ns, kind, name)
        workloads.append(w)
        pod_hash, job = suffix(10), f"{name}-{28_000_000 + serial}"
        for r in range(replicas):
            node = rng.randrange(nodes)
            if kind == "Deployment":
                add_pod(w, node, f"{name}-{pod_hash}-{suffix()}", ("ReplicaSet",
                        f"{name}-{pod_hash}"), ("Deployment", name), pod_hash)
            elif kind == "StatefulSet":
                add_pod(w, node, f"{name}-{r}", ("StatefulSet", name), ("StatefulSet", name))
            elif kind == "CronJob":
                add_pod(w, node, f"{job}-{suffix()}", ("Job", job), ("Job", job))
            else:
                add_pod(w, node, name, None, ("Pod", name))
        total += replicas
    backends = [w for w in workloads if w.kind in _SERVER_PORTS and w.pods]
    rng.shuffle(backends)
    dns = next(w for w in workloads if w.name == "coredns")
    svc_list = [SimService("kube-system", "kube-dns", str(IPv4Address(_SVC_NET + 10)), 53, dns)]
    svc_list += [SimService(w.namespace, w.name, str(IPv4Address(_SVC_NET + 100 + i)), 80, w)
                 for i, w in enumerate(backends[:services - 1])]
    return Cluster(node_list, ns_list, workloads, svc_list, seed)


def _owner_ref(kind: str, name: str, uid: str) -> dict[str, Any]:
    api = {"ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
           "Deployment": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}[kind]
    return {"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}


def pod_object(p: SimPod) -> dict[str, Any]:
    """A Running pod as a watch event carries it (a typical, not a minimal, spec)."""
    labels = {"app.kubernetes.io/name": p.workload.name, "app.kubernetes.io/part-of":
              p.workload.namespace}
    if p.template_hash:
        labels["pod-template-hash"] = p.template_hash
    meta: dict[str, Any] = {
        "name": p.name, "namespace": p.workload.namespace, "uid": p.uid, "labels": labels,
        "resourceVersion": "123456", "creationTimestamp": "2023-11-14T20:00:00Z",
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2023-11-14T19:59:00Z"}}
    if p.owner:
        meta["ownerReferences"] = [_owner_ref(*p.owner, uid=p.uid[::-1])]
    container = {
        "name": p.workload.name, "image": f"registry.example.com/{p.workload.name}:1.4.2",
        "ports": [{"containerPort": p.workload.port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"memory": "256Mi"}},
        "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "POD_NAME", "valueFrom": {
            "fieldRef": {"fieldPath": "metadata.name"}}}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": p.workload.port}}}
    conditions = [{"type": t, "status": "True", "lastTransitionTime": "2023-11-14T20:00:05Z"}
                  for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"nodeName": p.node.name, "hostNetwork": p.workload.host_network,
                 "serviceAccountName": "default", "containers": [container],
                 "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"},
        "status": {"phase": "Running", "hostIP": p.node.ip, "podIP": p.ip,
                   "podIPs": [{"ip": p.ip}], "conditions": conditions,
                   "containerStatuses": [{"name": p.workload.name, "ready": True,
                                          "restartCount": 0, "containerID":
                                          f"containerd://{p.uid.replace('-', '')}"}]}}


def api_objects(c: Cluster) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, object) in the order a fresh map lists them."""
    for ns in c.namespaces:
        yield "Namespace", {"metadata": {"name": ns, "labels": {
            "kubernetes.io/metadata.name": ns, "team": ns.split("-")[0]}}}
    for n in c.nodes:
        yield "Node", {"metadata": {"name": n.name}, "status": {"addresses": [
            {"type": "InternalIP", "address": n.ip}, {"type": "Hostname", "address": n.name}]}}
    for w in c.workloads:
        owners = {p.owner for p in w.pods if p.owner and p.owner[0] in ("ReplicaSet", "Job")}
        for kind, name in sorted(owners):
            top = ("Deployment" if kind == "ReplicaSet" else "CronJob", w.name)
            yield kind, {"metadata": {"namespace": w.namespace, "name": name,
                                      "ownerReferences": [_owner_ref(*top, uid=name)]}}
    for p in c.pods:
        yield "Pod", pod_object(p)
    for s in c.services:
        yield "Service", {"metadata": {"namespace": s.namespace, "name": s.name}, "spec": {
            "type": _CLUSTER_IP, "clusterIP": s.cluster_ip, "clusterIPs": [s.cluster_ip],
            "ports": [{"port": s.port, "targetPort": s.backend.port, "protocol": "TCP"}],
            "selector": {"app.kubernetes.io/name": s.backend.name}}}
        for i in range(0, len(s.backend.pods), 100):  # the controller's 100 per slice
            yield "EndpointSlice", {
                "metadata": {"namespace": s.namespace, "name": f"{s.name}-{i // 100:05d}",
                             "labels": {"kubernetes.io/service-name": s.name}},
                "addressType": "IPv4", "ports": [{"port": s.backend.port}],
                "endpoints": [{"addresses": [p.ip], "conditions": {"ready": True},
                               "nodeName": p.node.name, "targetRef": {
                                   "kind": "Pod", "name": p.name, "uid": p.uid}}
                              for p in s.backend.pods[i:i + 100]]}
    yield "ClusterTraceProbe", {"metadata": {"name": "everything"}, "spec": {}}
    yield "ClusterTraceProbe", {"metadata": {"name": "teams"}, "spec": {
        "namespaceSelector": {"matchLabels": {"team": "team"}}}}
    yield "TraceProbe", {"metadata": {"namespace": "ingress", "name": "edge"}, "spec": {
        "podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name",
                                              "operator": "Exists"}]}}}


def load(cache: MetadataCache, objects: Iterator[tuple[str, dict[str, Any]]],
         now: float) -> None:
    """Feed objects through the handlers the map's watches call."""
    for kind, obj in objects:
        if kind == "Pod":
            cache.pod("ADDED", obj, now)
        elif kind in ("ReplicaSet", "Job"):
            cache.owner("ADDED", obj, kind)
        elif kind == "Service":
            cache.service("ADDED", obj, now)
        elif kind == "EndpointSlice":
            cache.endpoint_slice("ADDED", obj)
        elif kind == "Node":
            cache.node("ADDED", obj, now)
        elif kind == "Namespace":
            cache.namespace("ADDED", obj)
        else:
            cache.probe("ADDED", obj, kind)
