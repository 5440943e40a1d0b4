"""Naming both ends of an edge (pure): a workload, a Service, a node, or external.

Remote addresses resolve at the record's time through the IP directories; what
no directory knows is external, with distinct external addresses capped so a
scan or a CDN cannot blow up the map's cardinality (overflow is counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from traceprobe_map.ip_directory import IpDirectory

OVERFLOW = "external:other"


@dataclass(frozen=True)
class Peer:
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
    dns_names: dict[str, str] = field(default_factory=dict)  # ip -> name observed
    max_external: int = 1000
    overflowed: int = 0
    _external: set[str] = field(default_factory=set)

    def remote(self, ip: str | None, at: float) -> Peer:
        """The peer behind a remote address at time `at`."""
        if not ip:
            return UNKNOWN
        for directory in (self.services, self.pods, self.nodes):
            owner = directory.lookup(ip, at)
            if owner is not None:
                return owner
        if ip not in self._external and len(self._external) >= self.max_external:
            self.overflowed += 1
            return Peer("external", OVERFLOW)
        self._external.add(ip)
        return Peer("external", self.dns_names.get(ip, ip))

    @staticmethod
    def local(namespace: str | None, workload_kind: str | None, workload: str | None,
              node: str) -> Peer:
        """The local side, as the agent named it (a process outside pods is its node)."""
        if namespace and workload:
            return Peer("workload", workload, namespace, workload_kind)
        return Peer("node", node)
