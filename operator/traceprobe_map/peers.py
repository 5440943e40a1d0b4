"""Naming both ends of an edge (pure): a workload, a Service, a node, or external.

Remote addresses resolve at the record's time through the IP directories; what
no directory knows is external, with distinct external addresses capped so a
scan or a CDN cannot blow up the map's cardinality (overflow is counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from traceprobe_map.ip_directory import IpDirectory

OVERFLOW = "external:other"


class Peer(NamedTuple):
    """One end of an edge. A tuple: hashed in C, millions of times per merge."""

    kind: str  # workload, service, node, external, unknown
    name: str
    namespace: str | None = None
    workload_kind: str | None = None

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


UNKNOWN = Peer("unknown", "unknown")


@dataclass
class Resolver:
    pods: IpDirectory[Peer] = field(default_factory=IpDirectory)
    services: IpDirectory[Peer] = field(default_factory=IpDirectory)
    nodes: IpDirectory[Peer] = field(default_factory=IpDirectory)
    # (namespace, kind, name) -> (kind, name) of its controller: Job -> CronJob,
    # ReplicaSet -> Deployment when the pod-template-hash rule could not tell.
    owners: dict[tuple[str, str, str], tuple[str, str]] = field(default_factory=dict)
    # Service -> its endpoints' addresses (EndpointSlices), for NAT without conntrack.
    endpoints: dict[Peer, frozenset[str]] = field(default_factory=dict)
    max_external: int = 1000
    overflowed: int = 0
    _external: set[str] = field(default_factory=set)

    def remote(self, ip: str | None, at: float) -> Peer:
        """The peer behind a remote address at time `at`."""
        if not ip:
            return UNKNOWN
        owner = self.services.lookup(ip, at)
        if owner is None:
            owner = self.pods.lookup(ip, at)
            if owner is None:
                owner = self.nodes.lookup(ip, at)
        if owner is not None:
            return self._rolled_up(owner)
        if ip not in self._external and len(self._external) >= self.max_external:
            self.overflowed += 1
            return Peer("external", OVERFLOW)
        self._external.add(ip)
        return Peer("external", ip)

    def local(self, namespace: str | None, workload_kind: str | None, workload: str | None,
              node: str) -> Peer:
        """The local side, as the agent named it (a process outside pods is its node)."""
        if namespace and workload:
            return self._rolled_up(Peer("workload", workload, namespace, workload_kind))
        return Peer("node", node)

    def _rolled_up(self, peer: Peer) -> Peer:
        """A workload named by its top controller (at most a few hops: no cycles)."""
        for _ in range(4):
            if peer.kind != "workload" or peer.namespace is None or not self.owners:
                return peer
            parent = self.owners.get((peer.namespace, peer.workload_kind or "", peer.name))
            if parent is None:
                return peer
            peer = Peer("workload", parent[1], peer.namespace, parent[0])
        return peer

    def backends_of(self, service: Peer, at: float) -> set[Peer]:
        """Workloads behind a Service's endpoints at time `at`."""
        found = set()
        for ip in self.endpoints.get(service, frozenset()):
            owner = self.pods.lookup(ip, at)
            if owner is not None:
                found.add(self._rolled_up(owner))
        return found
