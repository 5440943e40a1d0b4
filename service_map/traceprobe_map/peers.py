"""Naming both ends of an edge (pure): a workload, a Service, a node, or external.

Remote addresses resolve at the record's time through the IP directories; what
no directory knows is external, with distinct external addresses capped so a
scan or a CDN cannot blow up the map's cardinality (overflow is counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from sys import intern
from typing import NamedTuple

from traceprobe_map.ip_directory import FOREVER, IpDirectory

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
    """Distinct external addresses and DNS names kept at once (those seen in this period
    or the one before); more go to OVERFLOW."""
    external_seconds: float = 300.0
    """How long an external address not seen again keeps its name (the map: its window)."""
    overflowed: int = 0
    # Externals seen in this period and the one before: an address unseen for two
    # periods frees its place under the cap (a scan years ago must not fill it).
    _external: set[str] = field(default_factory=set)
    _external_before: set[str] = field(default_factory=set)
    _named: int = 0  # distinct addresses in both sets: what the cap counts
    _dns_peers: dict[str, Peer] = field(default_factory=dict)
    _period_started: float | None = None
    # ip -> (peer, since, until): the answer for any time in [since, until), valid
    # until that address's history changes (the directories say when) or an owner does.
    _answers: dict[str, tuple[Peer, float, float]] = field(default_factory=dict)
    _locals: dict[tuple[str | None, str | None, str | None, str], Peer] = field(
        default_factory=dict)
    _peers: dict[Peer, Peer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for directory in (self.services, self.pods, self.nodes):
            directory.on_change = self._forget

    def _forget(self, ip: str) -> None:
        self._answers.pop(ip, None)

    def set_owner(self, workload: tuple[str, str, str], controller: tuple[str, str]) -> None:
        """(namespace, kind, name) is controlled by (kind, name)."""
        if self.owners.get(workload) != controller:
            self.owners[workload] = controller
            self._answers.clear()  # roll-ups may change: rare (new ReplicaSets, Jobs)
            self._locals.clear()

    def remote(self, ip: str | None, at: float) -> Peer:
        """The peer behind a remote address at time `at`."""
        if not ip:
            return UNKNOWN
        known = self._answers.get(ip)
        if known is not None and known[1] <= at < known[2]:
            return known[0]
        return self._remote(ip, at)

    def _remote(self, ip: str, at: float) -> Peer:
        for directory in (self.services, self.pods, self.nodes):
            owner = directory.lookup(ip, at)
            if owner is not None:
                peer = self._canonical(self._rolled_up(owner))
                span = directory.current_span(ip, at)
                # Only one directory may know the address: else the order matters.
                if span is not None and sum(d.knows(ip) for d in (
                        self.services, self.pods, self.nodes)) == 1:
                    self._answers[ip] = (peer, *span)
                return peer
        if not self._admit(ip):
            return self._canonical(Peer("external", OVERFLOW))
        peer = self._canonical(Peer("external", ip))
        self._answers[ip] = (peer, -FOREVER, FOREVER)  # until a directory claims it
        return peer

    def external_named(self, name: str) -> Peer:
        """An external peer by the DNS name its address was answered for: one peer
        for all of a name's addresses (a CDN's many become one)."""
        peer = self._dns_peers.get(name)
        if peer is None:
            if not self._admit(name):
                return self._canonical(Peer("external", OVERFLOW))
            peer = self._dns_peers[name] = self._canonical(Peer("external", name))
        return peer

    def _admit(self, external: str) -> bool:
        """Room under the cap for this external address or name, now seen."""
        if external in self._external:
            return True
        if external not in self._external_before:
            if self._named >= self.max_external:
                self.overflowed += 1
                return False
            self._named += 1
        self._external.add(external)
        return True

    def expire(self, now: float) -> None:
        """Forget ended tenures past their grace, and externals not seen for a while."""
        for directory in (self.pods, self.services, self.nodes):
            directory.expire(now)
        if self._period_started is None:
            self._period_started = now
        elif now - self._period_started >= self.external_seconds:
            self._period_started = now
            self._external_before, self._external = self._external, set()
            self._named = len(self._external_before)
            # Remembered external answers would skip the bookkeeping above.
            self._answers = {ip: a for ip, a in self._answers.items()
                             if a[0].kind != "external"}
            self._dns_peers.clear()

    def local(self, namespace: str | None, workload_kind: str | None, workload: str | None,
              node: str) -> Peer:
        """The local side, as the agent named it (a process outside pods is its node)."""
        key = (namespace, workload_kind, workload, node) if not (namespace and workload) \
            else (namespace, workload_kind, workload, "")
        peer = self._locals.get(key)
        if peer is None:
            if len(self._locals) >= 100_000:
                self._locals.clear()
            peer = self._locals[key] = self._canonical(
                self._rolled_up(Peer("workload", workload, namespace, workload_kind))
                if namespace and workload else Peer("node", node))
        return peer

    def _canonical(self, peer: Peer) -> Peer:
        """One object per peer: edge keys then compare by identity (and their strings
        stay in the CPU's cache): a window bucket took ~20% less CPU when measured."""
        found = self._peers.get(peer)
        if found is None:
            if len(self._peers) >= 200_000:
                self._peers.clear()
            found = self._peers[peer] = Peer(
                intern(peer.kind), intern(peer.name),
                intern(peer.namespace) if peer.namespace else peer.namespace,
                intern(peer.workload_kind) if peer.workload_kind else peer.workload_kind)
        return found

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
