"""This node's pods by UID, for naming the local side of records (pure).

Fed by a node-scoped watch (kube.py): each agent knows only its own node's
pods, so watch traffic grows with pods per node, not with the cluster. Deleted
pods stay for a grace period so records drained after the deletion still name
them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from traceprobe_agent.pod_cgroups import pod_uid
from traceprobe_api.records import ConnectionRecord
from traceprobe_api.workloads import workload_of

__all__ = ["AwaitPods", "PodIndex", "PodInfo", "pod_info", "workload_of"]
_NAMING_FIELDS = ("k8s_namespace", "k8s_pod", "k8s_pod_uid", "k8s_workload_kind",
                  "k8s_workload", "k8s_host_network")
_NAMING_KEYS = frozenset(_NAMING_FIELDS)


@dataclass(frozen=True)
class PodInfo:
    uid: str
    namespace: str
    name: str
    workload_kind: str
    workload: str
    host_network: bool
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    ips: tuple[str, ...] = ()  # its own addresses (none for a hostNetwork pod)


def pod_info(obj: dict[str, Any]) -> PodInfo:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    status = obj.get("status") or {}
    kind, workload = workload_of(meta)
    host_network = bool(spec.get("hostNetwork"))
    ips = [str(a.get("ip")) for a in status.get("podIPs") or [] if a.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return PodInfo(str(meta["uid"]), str(meta.get("namespace", "")), str(meta["name"]),
                   kind, workload, host_network,
                   {str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
                   () if host_network else tuple(ips))


class PodIndex:
    def __init__(self, grace_seconds: float = 120.0) -> None:
        self.grace_seconds = grace_seconds
        self._pods: dict[str, PodInfo] = {}
        self._deleted_at: dict[str, float] = {}
        self._uids: dict[str, str | None] = {}
        # Per pod, the fields enrich sets: built once, shared by all its records.
        self._naming: dict[str, dict[str, Any]] = {}
        # A pod's own address -> its UID: names a local side whose cgroup went unseen.
        self._by_ip: dict[str, str] = {}
        self.version = 0  # changes with every change of what the index holds

    def upsert(self, info: PodInfo) -> None:
        self.version += 1
        self._pods[info.uid] = info
        for ip in info.ips:  # an address reused by a new pod is the new pod's
            self._by_ip[ip] = info.uid
        self._naming[info.uid] = dict(zip(_NAMING_FIELDS, (
            info.namespace, info.name, info.uid, info.workload_kind, info.workload,
            info.host_network), strict=True))
        self._deleted_at.pop(info.uid, None)

    def delete(self, uid: str, now: float | None = None) -> None:
        if uid in self._pods:
            self.version += 1
            self._deleted_at[uid] = time.monotonic() if now is None else now

    def replace_all(self, infos: list[PodInfo], now: float | None = None) -> None:
        """A fresh listing: pods missing from it count as deleted now."""
        seen = {i.uid for i in infos}
        for uid in list(self._pods):
            if uid not in seen:
                self.delete(uid, now)
        for info in infos:
            self.upsert(info)

    def expire(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for uid, at in list(self._deleted_at.items()):
            if now - at > self.grace_seconds:
                del self._deleted_at[uid]
                gone = self._pods.pop(uid, None)
                self._naming.pop(uid, None)
                for ip in gone.ips if gone else ():
                    if self._by_ip.get(ip) == uid:
                        del self._by_ip[ip]
                self.version += 1

    def get(self, uid: str | None) -> PodInfo | None:
        return self._pods.get(uid) if uid else None

    def by_ip(self, address: str | None) -> PodInfo | None:
        """The pod whose own address this is (not a hostNetwork pod's, which is the node's)."""
        uid = self._by_ip.get(address) if address else None
        return self._pods.get(uid) if uid else None

    def __len__(self) -> int:
        return len(self._pods)

    def _uid_of(self, cgroup_path: str | None) -> str | None:
        # A container's cgroup path repeats in every interval: parse it once.
        if cgroup_path is None:
            return None
        uid = self._uids.get(cgroup_path, "")
        if uid == "":
            if len(self._uids) > 100_000:
                self._uids.clear()
            uid = self._uids[cgroup_path] = pod_uid(cgroup_path)
        return uid

    def enrich(self, record: ConnectionRecord) -> ConnectionRecord:
        """Name the record's local pod, in place, and return it: the agent's records
        are its own, fresh from the drain, and a copy per record would cost ~3x.
        A record whose cgroup went unnamed (a container created and gone between two
        looks, or a server socket no process touched) is named by its local address
        when that is a pod's own."""
        if record.cgroup_path is None:
            uid = self._by_ip.get(record.local_ip) if record.local_ip else None
        else:
            uid = self._uid_of(record.cgroup_path)
        naming = self._naming.get(uid) if uid else None
        if naming is not None:
            record.__dict__.update(naming)
            record.__pydantic_fields_set__.update(_NAMING_KEYS)
        return record

    def awaited(self, record: ConnectionRecord) -> bool:
        """The record's cgroup is a pod's that this index has not heard of (yet), or
        went unnamed and its local address is no known pod's (it may be a new pod's)."""
        if record.cgroup_path is None:
            return bool(record.cgroup_id) and not record.k8s_pod_uid \
                and record.local_ip not in self._by_ip
        uid = self._uid_of(record.cgroup_path)
        return uid is not None and uid not in self._naming


class AwaitPods:
    """Holds records of pods the index does not know yet, for up to `max_wait` seconds.

    The kubelet starts a container as soon as it sees the pod; this agent's watch may
    tell it seconds later (the API server or this node under load), and a Job's pod can
    come and go within one interval. Sent unnamed, such records would be drawn as the
    node's; held, they are named once the pod's event arrives. Called every flush."""

    def __init__(self, index: PodIndex, max_wait: float = 10.0, max_held: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.index = index
        self.max_wait = max_wait
        self.max_held = max_held
        self._clock = clock
        self._held: list[tuple[float, ConnectionRecord]] = []
        self.unnamed = 0  # records sent unnamed after the wait

    def __call__(self, records: list[ConnectionRecord]) -> list[ConnectionRecord]:
        now = self._clock()
        ready: list[ConnectionRecord] = []
        held: list[tuple[float, ConnectionRecord]] = []
        for since, record in self._held:
            if not self.index.awaited(record):
                ready.append(self.index.enrich(record))
            elif now - since >= self.max_wait:
                self.unnamed += 1
                ready.append(record)
            else:
                held.append((since, record))
        for record in records:
            if self.index.awaited(record) and len(held) < self.max_held:
                held.append((now, record))
            else:
                ready.append(record)
        self._held = held
        return ready

    def drain(self) -> list[ConnectionRecord]:
        """Everything held, named where the pod is known now (the agent is stopping)."""
        ready = [self.index.enrich(r) for _, r in self._held]
        self.unnamed += sum(1 for r in ready if self.index.awaited(r))
        self._held = []
        return ready

    def __len__(self) -> int:
        return len(self._held)
