"""The map's data between records and snapshots: edge keys and what a bucket holds.

`merge.fold` fills a Partial as records arrive, `merge.finish` turns it into a
MergeResult, and `Recent` carries a finished bucket's client-side facts to its
neighbours. Types only: the rules that use them live in merge.py and
server_sides.py, which both import this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.peers import Peer

OVERFLOW_PEER = Peer("overflow", "overflow")


class EdgeKey(NamedTuple):
    """An edge: a tuple, for the same reason as Peer."""

    src: Peer
    dst: Peer
    port: int | None
    transport: str


@dataclass
class MergeResult:
    edges: dict[EdgeKey, EdgeStats] = field(default_factory=dict)
    udp_records: int = 0  # no peer visible to tracepoints: not drawn
    loopback_records: int = 0  # a process talking to its own host or pod: not drawn
    overflowed_edges: int = 0  # folded into the overflow edge by the cap
    reused_address_records: int = 0  # the remote address changed owner inside the span


@dataclass
class Recent:
    """What the client sides of neighbouring buckets counted: agents' intervals are
    not aligned, so a connection's server side may land a bucket before or after its
    client's. An edge whose client has an agent is counted by that agent alone."""

    client_keys: set[EdgeKey] = field(default_factory=set)
    via_service: dict[tuple[Peer, Peer], EdgeKey] = field(default_factory=dict)
    """(client, backend) -> the Service edge conntrack said it went through."""
    service_edges: dict[Peer, list[EdgeKey]] = field(default_factory=dict)
    """client -> its Service edges without conntrack (EndpointSlices tell the backends)."""

    @classmethod
    def of(cls, part: Partial) -> Recent:
        """The client-side facts of one bucket (finished or still open)."""
        recent = cls(set(part.client), dict(part.via_service))
        for key in part.client:
            if key.dst.kind == "service" and key not in part.conntracked:
                recent.service_edges.setdefault(key.src, []).append(key)
        return recent

    def update(self, other: Recent) -> None:
        self.client_keys |= other.client_keys
        self.via_service.update(other.via_service)
        for src, keys in other.service_edges.items():
            self.service_edges.setdefault(src, []).extend(keys)


@dataclass
class Partial:
    """One bucket's records, folded: memory grows with edges, not with records."""

    client: dict[EdgeKey, EdgeStats] = field(default_factory=dict)
    server: dict[EdgeKey, EdgeStats] = field(default_factory=dict)
    server_at: dict[EdgeKey, float] = field(default_factory=dict)
    # Server sides whose client address had other owners inside a record's span.
    earlier_owners: dict[EdgeKey, list[Peer]] = field(default_factory=dict)
    # (client peer, backend peer) -> the Service edge conntrack says it went through
    via_service: dict[tuple[Peer, Peer], EdgeKey] = field(default_factory=dict)
    conntracked: set[EdgeKey] = field(default_factory=set)
    records: int = 0
    udp_records: int = 0
    loopback_records: int = 0
    reused_address_records: int = 0
    max_keys: int = 200_000
    """Client plus server edges an open bucket may hold (memory); records that would add
    one more are dropped and counted, records of known edges still count."""
    dropped_records: int = 0
