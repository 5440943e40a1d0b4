"""Which local processes this node's probes observe (pure).

A TraceProbe observes the pods of its own namespace that its podSelector matches;
a ClusterTraceProbe the pods of the namespaces its namespaceSelector matches and,
with hostProcesses, the node's processes that belong to no pod. Everything else
is seen only as the remote peer of what is observed: its own sockets are neither
tracked in the kernel (the verdict map) nor reported (the check at each drain).

A process is known by its cgroup: a pod's cgroup path names the pod's UID. A
record whose cgroup could not be named (created and gone between two looks) is
known by its local address when that is a pod's, else it waits like a record of
a pod not heard of yet, and is then taken for the node's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from traceprobe_agent.pod_cgroups import pod_uid, under
from traceprobe_agent.pod_index import PodIndex, PodInfo
from traceprobe_api.records import ConnectionRecord
from traceprobe_api.selectors import matches

NAME_LABEL = "kubernetes.io/metadata.name"  # the API server sets it on every namespace


class ProbeScope(Protocol):
    """What of a probe decides its scope (node_config.ProbeView has it)."""

    @property
    def namespace(self) -> str | None: ...
    @property
    def pod_selector(self) -> dict[str, Any]: ...
    @property
    def namespace_selector(self) -> dict[str, Any] | None: ...  # None: namespaced
    @property
    def host_processes(self) -> bool: ...


class Verdict(IntEnum):
    """What to do with a process's sockets; TRACE and SKIP as the kernel spells them."""

    PENDING = 0  # not decided yet: a pod or namespace this agent has not heard of
    TRACE = 1
    SKIP = 2


def _selects(probe: ProbeScope, pod: PodInfo,
             namespaces: Mapping[str, Mapping[str, str]]) -> bool | None:
    """Does `probe` observe `pod`? None: its namespace's labels are not known yet."""
    if probe.namespace_selector is None:  # namespaced: its own namespace only
        if pod.namespace != probe.namespace:
            return False
    elif probe.namespace_selector:
        labels = namespaces.get(pod.namespace)
        if labels is None:
            return None
        if not matches(probe.namespace_selector, {NAME_LABEL: pod.namespace, **labels}):
            return False
    return matches(probe.pod_selector, pod.labels)


@dataclass(frozen=True)
class Scope:
    """The live probes that apply to this node, and the namespaces' labels."""

    probes: tuple[ProbeScope, ...] = ()
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def hosts(self) -> bool:
        return any(p.host_processes for p in self.probes)

    def of_pod(self, pod: PodInfo) -> Verdict:
        unknown = False
        for probe in self.probes:
            chosen = _selects(probe, pod, self.namespaces)
            if chosen:
                return Verdict.TRACE
            unknown = unknown or chosen is None
        return Verdict.PENDING if unknown else Verdict.SKIP

    def of_host(self) -> Verdict:
        return Verdict.TRACE if self.hosts else Verdict.SKIP


class Selection:
    """The Scope applied to cgroups and records, with this node's pods.

    `update` swaps the scope (the cluster loop, on every probe or namespace change);
    the pods come from the shared PodIndex. Verdicts are cached per pod UID until
    either changes."""

    def __init__(self, pods: PodIndex, cgroup_root: str | None = None) -> None:
        self.pods = pods
        self.cgroup_root = cgroup_root
        self.scope = Scope()  # nothing observed until the probes are read
        self.skipped_records = 0  # records of unselected processes, not reported
        self.undecided_records = 0  # still undecided after the wait (pod never heard of)
        self._cache: dict[str, Verdict] = {}
        self._seen: tuple[int, int] = (-1, -1)

    def update(self, scope: Scope) -> None:
        self.scope = scope

    def _by_uid(self, uid: str) -> Verdict:
        seen = (id(self.scope), self.pods.version)
        if seen != self._seen:
            self._cache.clear()
            self._seen = seen
        verdict = self._cache.get(uid)
        if verdict is None:
            pod = self.pods.get(uid)
            verdict = self.scope.of_pod(pod) if pod else Verdict.PENDING
            if pod is not None:  # an unknown pod is asked again once the index changes
                self._cache[uid] = verdict
        return verdict

    def of_path(self, path: str) -> Verdict:
        if self.cgroup_root is not None and not under(path, self.cgroup_root):
            return Verdict.SKIP  # another (simulated) node's
        uid = pod_uid(path)
        return self._by_uid(uid) if uid else self.scope.of_host()

    def of_record(self, record: ConnectionRecord, final: bool = False) -> Verdict:
        """`final`: the record waited for its pod already; an unnamed cgroup is the node's."""
        if record.cgroup_path is not None:
            return self.of_path(record.cgroup_path)
        if record.k8s_pod_uid:  # named by its local address (PodIndex.enrich)
            return self._by_uid(record.k8s_pod_uid)
        pod = self.pods.by_ip(record.local_ip)
        if pod is not None:
            return self._by_uid(pod.uid)
        if record.cgroup_id and not final:
            return Verdict.PENDING
        return self.scope.of_host()

    def keep(self, records: list[ConnectionRecord], final: bool = False
             ) -> list[ConnectionRecord]:
        """The records some probe observes (and, unless `final`, those undecided)."""
        kept = []
        for record in records:
            verdict = self.of_record(record, final)
            if verdict is Verdict.TRACE or (verdict is Verdict.PENDING and not final):
                kept.append(record)
            elif verdict is Verdict.PENDING:
                self.undecided_records += 1
            else:
                self.skipped_records += 1
        return kept

    def kernel_verdicts(self, cgroups: Iterable[tuple[int, str]]) -> dict[int, int]:
        """cgroup id -> TRACE/SKIP for the kernel's map; undecided cgroups stay out."""
        out = {}
        for cgroup_id, path in cgroups:
            verdict = self.of_path(path)
            if verdict is not Verdict.PENDING:
                out[cgroup_id] = int(verdict)
        return out

    def skips_client(self, address: str) -> bool:
        """Whether `address` is a pod of this node that no probe observes (the NAT
        watcher's thread asks: no shared cache is touched)."""
        pod = self.pods.by_ip(address)
        return pod is not None and self.scope.of_pod(pod) is Verdict.SKIP

    def allows(self, path: str | None) -> bool:
        """For the DNS tap's undecided answers: drop only what is known to be skipped."""
        return path is None or self.of_path(path) is not Verdict.SKIP

