"""Cluster objects into the resolver's directories (pure; kube.py feeds it).

Only what naming needs is kept per object (addresses, owner, labels), so
memory grows with the number of pods, not with the size of their specs.
Every handler takes the object as the API server sent it (a plain dict) and
the time it applies from; `relist` handlers replace one kind wholesale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from traceprobe_api.records import ConnectionRecord
from traceprobe_api.selectors import matches
from traceprobe_api.workloads import workload_of
from traceprobe_map.ip_directory import IpDirectory
from traceprobe_map.peers import Peer, Resolver

log = logging.getLogger("traceprobe.map.metadata")
_NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP")


@dataclass(frozen=True)
class _Pod:
    ips: tuple[str, ...]
    peer: Peer
    namespace: str
    labels: dict[str, str]


@dataclass(frozen=True)
class _Probe:
    ref: str
    namespace: str | None  # None: a ClusterTraceProbe
    pod_selector: dict[str, Any]
    namespace_selector: dict[str, Any]


def _move(directory: IpDirectory[Peer], peer: Peer, old: tuple[str, ...],
          new: tuple[str, ...], now: float) -> None:
    """`peer` now holds `new`: addresses it no longer has are released."""
    for ip in old:
        if ip not in new:
            directory.release(ip, peer, now)
    for ip in new:
        directory.claim(ip, peer, now)


def _epoch(stamp: object) -> float:
    """An API timestamp ("2026-01-01T00:00:00Z") in seconds; 0 when absent or unreadable."""
    if not isinstance(stamp, str):
        return 0.0
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


@dataclass
class MetadataCache:
    resolver: Resolver
    lock: threading.Lock = field(default_factory=threading.Lock)
    _pods: dict[str, _Pod] = field(default_factory=dict)
    _services: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    _slices: dict[tuple[str, str], tuple[Peer, frozenset[str]]] = field(default_factory=dict)
    _nodes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    _probes: dict[str, _Probe] = field(default_factory=dict)

    malformed: int = 0
    """Objects whose shape no handler could read (skipped, counted, logged once)."""

    def safely(self, handle: Callable[[], None]) -> None:
        """Run one handler; an object of an unexpected shape is skipped, not fatal."""
        try:
            handle()
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            if not self.malformed:
                log.warning("skipping an object of unexpected shape (%s: %s)",
                            type(exc).__name__, exc)
            self.malformed += 1

    # --- pods -------------------------------------------------------------
    def pod(self, event: str, obj: dict[str, Any], now: float) -> None:
        meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
        uid = str(meta.get("uid", ""))
        gone = (event == "DELETED" or status.get("phase") in ("Succeeded", "Failed")
                or meta.get("deletionTimestamp") is not None)
        # A hostNetwork pod's address is its node's: that resolves to the node.
        ips: tuple[str, ...] = () if gone or spec.get("hostNetwork") else tuple(
            sorted(p["ip"] for p in status.get("podIPs") or [] if p.get("ip")))
        kind, name = workload_of(meta)
        namespace = str(meta.get("namespace", ""))
        peer = Peer("workload", name, namespace, kind)
        with self.lock:
            old = self._pods.get(uid)
            if old is not None:
                for ip in old.ips:
                    if ip not in ips or old.peer != peer:
                        self.resolver.pods.release(ip, old.peer, now)
            for ip in ips:
                self.resolver.pods.claim(ip, peer, now)
            if gone and not (old is not None and old.ips) and not spec.get("hostNetwork"):
                self._finished_before_seen(status, peer, now)
            if event == "DELETED":
                self._pods.pop(uid, None)
            else:
                self._pods[uid] = _Pod(ips, peer, namespace, dict(meta.get("labels") or {}))

    def _finished_before_seen(self, status: dict[str, Any], peer: Peer, now: float) -> None:
        """A pod whose first event already says it finished (its status went from
        Pending to Succeeded between two updates) held its addresses from its start to
        its last container's end: records of that span still name it."""
        ends = [_epoch(s.get("state", {}).get("terminated", {}).get("finishedAt"))
                for s in status.get("containerStatuses") or []]
        since, until = _epoch(status.get("startTime")), max((e for e in ends if e), default=0)
        if not since:
            return
        until = min(until or now, now) + 1.0  # the API's timestamps are whole seconds
        for ip in (p["ip"] for p in status.get("podIPs") or [] if p.get("ip")):
            self.resolver.pods.claim_past(ip, peer, since, until)

    def relist_pods(self, items: list[dict[str, Any]], now: float) -> None:
        seen = {str(_meta(o).get("uid", "")) for o in items if isinstance(o, dict)}
        for uid in [u for u in self._pods if u not in seen]:
            old = self._pods[uid]
            self.pod("DELETED", {"metadata": {"uid": uid, "namespace": old.namespace,
                                              "name": old.peer.name}}, now)
        for obj in items:
            self.safely(lambda o=obj: self.pod("ADDED", o, now))  # type: ignore[misc]

    # --- owners (ReplicaSet -> Deployment, Job -> CronJob) -----------------
    def owner(self, event: str, obj: dict[str, Any], kind: str) -> None:
        meta = _meta(obj)
        key = (str(meta.get("namespace", "")), kind, str(meta.get("name", "")))
        controller = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")),
                          None)
        with self.lock:
            # Deleted owners stay: late records of their pods still roll up.
            if controller is not None and event != "DELETED":
                self.resolver.set_owner(key, (str(controller["kind"]), str(controller["name"])))

    # --- services and their endpoints ---------------------------------------
    def service(self, event: str, obj: dict[str, Any], now: float) -> None:
        meta, spec = _meta(obj), obj.get("spec") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        peer = Peer("service", key[1], key[0])
        ips = () if event == "DELETED" else tuple(
            ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None")
        with self.lock:
            _move(self.resolver.services, peer, self._services.get(key, ()), ips, now)
            if ips:
                self._services[key] = ips
            else:
                self._services.pop(key, None)

    def endpoint_slice(self, event: str, obj: dict[str, Any]) -> None:
        meta = _meta(obj)
        namespace = str(meta.get("namespace", ""))
        service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        key = (namespace, str(meta.get("name", "")))
        with self.lock:
            old = self._slices.pop(key, None)
            if service and event != "DELETED":
                addresses = frozenset(a for ep in obj.get("endpoints") or []
                                      for a in ep.get("addresses") or [])
                self._slices[key] = (Peer("service", service, namespace), addresses)
            for peer in {p for p, _ in ([old] if old else [])} | (
                    {self._slices[key][0]} if key in self._slices else set()):
                union = frozenset().union(*(a for p, a in self._slices.values() if p == peer))
                if union:
                    self.resolver.endpoints[peer] = union
                else:
                    self.resolver.endpoints.pop(peer, None)

    # --- nodes and namespaces -----------------------------------------------
    def node(self, event: str, obj: dict[str, Any], now: float) -> None:
        name = str(_meta(obj).get("name", ""))
        peer = Peer("node", name)
        ips = () if event == "DELETED" else tuple(
            a["address"] for a in (obj.get("status") or {}).get("addresses") or []
            if a.get("type") in _NODE_ADDRESS_TYPES)
        with self.lock:
            _move(self.resolver.nodes, peer, self._nodes.get(name, ()), ips, now)
            self._nodes[name] = ips

    def namespace(self, event: str, obj: dict[str, Any]) -> None:
        meta = _meta(obj)
        with self.lock:
            if event == "DELETED":
                self._namespaces.pop(str(meta.get("name")), None)
            else:
                self._namespaces[str(meta.get("name"))] = dict(meta.get("labels") or {})

    # --- probes: which ones observed a record -----------------------------------
    def probe(self, event: str, obj: dict[str, Any], kind: str) -> None:
        meta, spec = _meta(obj), obj.get("spec") or {}
        namespace = meta.get("namespace") if kind == "TraceProbe" else None
        ref = f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))
        with self.lock:
            if event == "DELETED":
                self._probes.pop(ref, None)
            else:
                self._probes[ref] = _Probe(ref, namespace, spec.get("podSelector") or {},
                                           spec.get("namespaceSelector") or {})

    def probe_refs(self) -> list[str]:
        return sorted(self._probes)

    def probes_of(self, record: ConnectionRecord) -> list[str]:
        """Probes whose selectors take in the record's local pod."""
        pod = self._pods.get(record.k8s_pod_uid or "")
        if pod is None:
            return []
        ns_labels = self._namespaces.get(pod.namespace, {})
        return [p.ref for p in list(self._probes.values())
                if (p.namespace == pod.namespace if p.namespace is not None
                    else matches(p.namespace_selector, ns_labels))
                and matches(p.pod_selector, pod.labels)]

    def sizes(self) -> dict[str, int]:
        return {"pods": len(self._pods), "services": len(self._services),
                "endpointslices": len(self._slices), "nodes": len(self._nodes),
                "namespaces": len(self._namespaces), "probes": len(self._probes),
                "malformed": self.malformed,
                "owners": len(self.resolver.owners)}
