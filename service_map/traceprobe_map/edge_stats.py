"""What the map knows about one edge: counts from the client's point of view,
each direction's retransmits and each side's RTT, where NATed connections went,
and who saw it (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from traceprobe_map.peers import Peer
from traceprobe_map.request_tally import RequestTally

COUNTERS = ("connections", "refused", "timeouts", "resets", "bytes_sent", "bytes_received",
            "retransmits", "rtt_sum_us", "rtt_samples", "server_retransmits",
            "server_rtt_sum_us", "server_rtt_samples", "duration_sum_ns", "conntracked",
            "datagrams_sent", "datagrams_received")
MAXIMA = ("rtt_max_us", "server_rtt_max_us")
"""Fields that are maxima, not sums: they cannot be subtracted (window.py)."""
RTT_STEPS = 4  # RTT buckets ~19% wide: percentiles good to about that
# A mean srtt of `us` goes to bucket int(log2(max(us, 1)) * RTT_STEPS) (merge.fold).


def bucket_value(bucket: int) -> float:
    """Geometric middle of a bucket."""
    return float(2 ** ((bucket + 0.5) / RTT_STEPS))


def server_bucket(bucket: int) -> int:
    """Where EdgeStats.rtt_histogram keeps the server's samples of `bucket`."""
    return -1 - bucket


def split_buckets(histogram: Counter[int]) -> tuple[Counter[int], Counter[int]]:
    """EdgeStats.rtt_histogram as the client's and the server's plain bucket -> samples."""
    client: Counter[int] = Counter()
    server: Counter[int] = Counter()
    for key, samples in histogram.items():
        if key >= 0:
            client[key] = samples
        else:
            server[server_bucket(key)] = samples  # the encoding is its own inverse
    return client, server


def percentiles(histogram: Counter[int], *qs: float) -> list[float | None]:
    """The q-quantiles (ascending qs) of an RTT histogram (bucket -> samples), in one
    pass over its sorted buckets; None when it is empty."""
    total = sum(histogram.values())
    if not total:
        return [None] * len(qs)
    out: list[float | None] = []
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        while len(out) < len(qs) and seen >= qs[len(out)] * total:
            out.append(bucket_value(bucket))
        if len(out) == len(qs):
            return out
    return out + [bucket_value(max(histogram))] * (len(qs) - len(out))


Names = frozenset[str]
NO_NAMES: Names = frozenset()
_NAME_SETS: dict[Names, Names] = {}
_WITH: dict[tuple[Names, str], Names] = {}  # every bucket grows its sets the same way
_MAX_NAME_SETS = 500_000


def names_with(names: Names, name: str) -> Names:
    """`names` plus `name`, shared: like sys.intern for the small name sets every bucket
    of the window repeats (an edge's pods and nodes), so each distinct set exists once."""
    found = _WITH.get((names, name))
    if found is None:
        if len(_WITH) >= _MAX_NAME_SETS:
            _WITH.clear()
        found = _WITH[(names, name)] = names if name in names else _shared(names | {name})
    return found


def names_union(a: Names, b: Names) -> Names:
    if b <= a:
        return a
    if a <= b:
        return b
    return _shared(a | b)


def names_of(names: Iterable[str]) -> Names:
    return _shared(frozenset(names))


def _shared(names: Names) -> Names:
    found = _NAME_SETS.get(names)
    if found is None:
        if len(_NAME_SETS) >= _MAX_NAME_SETS:
            _NAME_SETS.clear()  # forgetting costs sharing only, never a name
        found = _NAME_SETS[names] = names
    return found


NameSets = tuple[Names, Names, Names, Names, Names, Names]
"""An edge's names as EdgeStats.names() gives them, in that order."""
NO_NAME_SETS: NameSets = (NO_NAMES,) * 6

CLIENT_SIDE = _shared(frozenset({"client"}))
SERVER_SIDE = _shared(frozenset({"server"}))


@dataclass(slots=True)  # no per-edge __dict__: a window holds ~200k of these
class EdgeStats:
    """Counts from the client's point of view: bytes_sent is src → dst.

    Retransmits and RTT are the only figures each side measures for itself, so both
    are kept per side: `retransmits` and `rtt_*` come from the client's records
    (packets the client resent towards the server; the client's smoothed RTT),
    `server_retransmits` and `server_rtt_*` from the server's (packets the server
    resent towards the client; the server's smoothed RTT); `rtt_histogram` holds both
    sides' buckets apart. A side no agent observed (`observed_by`) leaves its figures
    at zero: readers tell that from a measured zero by `observed_by`, as
    snapshot.build_snapshot does."""

    connections: int = 0
    refused: int = 0
    timeouts: int = 0
    resets: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    retransmits: int = 0
    """Sent by the client (client → server), as the client's agent counted them."""
    rtt_sum_us: int = 0
    rtt_samples: int = 0
    server_retransmits: int = 0
    """Sent by the server (server → client), as the server's agent counted them."""
    server_rtt_sum_us: int = 0
    server_rtt_samples: int = 0
    duration_sum_ns: int = 0
    datagrams_sent: int = 0
    """UDP: client → server (its bytes are bytes_sent), and back."""
    datagrams_received: int = 0
    rtt_max_us: int = 0
    server_rtt_max_us: int = 0
    rtt_histogram: Counter[int] = field(default_factory=Counter)
    """Per-record mean srtt bucket -> samples, both sides in one Counter (a second,
    even empty, would add 88 bytes to each of the window's ~200k stats): the client's
    at the bucket, the server's at server_bucket(bucket), below 0. split_buckets()
    reads them back."""
    backends: Counter[Peer] = field(default_factory=Counter)
    """Service edges: attempts per real destination workload, from the clients' conntrack
    (`conntracked` > 0); else connections each backend's own agent accepted."""
    conntracked: int = 0
    """Client records that carried conntrack backends (each: parts <= its attempts)."""
    requests: RequestTally | None = None
    """Requests answered on the edge (probe kind http), both sides' apart; None until
    a record carries some (most edges never do)."""
    # Shared immutable sets (names_with/names_union): one set object serves every
    # bucket and edge with the same names, instead of six sets per edge per bucket.
    observed_by: Names = NO_NAMES
    src_pods: Names = NO_NAMES
    """Pods on each end named by the records (namespace/name), and their nodes."""
    dst_pods: Names = NO_NAMES
    src_nodes: Names = NO_NAMES
    dst_nodes: Names = NO_NAMES
    probes: Names = NO_NAMES

    @property
    def failures(self) -> int:
        """Attempts that failed: refused, timed out, or reset once established."""
        return self.refused + self.timeouts + self.resets

    @property
    def attempts(self) -> int:
        """Connections tried: the established ones (reset ones among them, so a reset
        is one attempt that failed, not two) and those refused or timed out."""
        return self.connections + self.refused + self.timeouts

    def absorb(self, other: EdgeStats) -> None:
        """Sum another window's (or another copy of the same side's) stats into this one."""
        self.add_counts(other)
        self.add_maxima(other)
        self.merge_sides(other)

    def add_maxima(self, other: EdgeStats) -> None:
        if other.rtt_max_us > self.rtt_max_us:
            self.rtt_max_us = other.rtt_max_us
        if other.server_rtt_max_us > self.server_rtt_max_us:
            self.server_rtt_max_us = other.server_rtt_max_us

    def add_server_side(self, server: EdgeStats) -> None:
        """What only the server side measures (its retransmits and RTT), from a
        server-side observation whose counts a client side already holds."""
        self.server_retransmits += server.server_retransmits
        self.server_rtt_sum_us += server.server_rtt_sum_us
        self.server_rtt_samples += server.server_rtt_samples
        if server.rtt_histogram:
            self.rtt_histogram.update({key: samples for key, samples
                                       in server.rtt_histogram.items() if key < 0})
        if server.server_rtt_max_us > self.server_rtt_max_us:
            self.server_rtt_max_us = server.server_rtt_max_us
        if server.requests:
            self.tally().add(server.requests, side="server")

    def tally(self) -> RequestTally:
        if self.requests is None:
            self.requests = RequestTally()
        return self.requests

    def add_counts(self, other: EdgeStats) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.rtt_histogram:
            self.rtt_histogram.update(other.rtt_histogram)
        if other.backends:
            self.backends.update(other.backends)
        if other.requests:
            self.tally().add(other.requests)

    def subtract_counts(self, other: EdgeStats) -> None:
        """Take a bucket's counts back out (it left the window); names and the
        maximum cannot be subtracted: the caller keeps track of those."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) - getattr(other, name))
        if other.rtt_histogram:
            self.rtt_histogram.subtract(other.rtt_histogram)
            self.rtt_histogram = +self.rtt_histogram  # drop zero and negative entries
        if other.backends:
            self.backends.subtract(other.backends)
            self.backends = +self.backends
        if other.requests and self.requests is not None:
            self.requests.subtract(other.requests)

    def names(self) -> NameSets:
        return (self.observed_by, self.src_pods, self.dst_pods, self.src_nodes,
                self.dst_nodes, self.probes)

    def set_names(self, names: NameSets) -> None:
        (self.observed_by, self.src_pods, self.dst_pods, self.src_nodes, self.dst_nodes,
         self.probes) = names

    def merge_sides(self, other: EdgeStats) -> None:
        """Who saw it, where: the other side's names without its counts."""
        self.merge_sides_of(other.names())

    def merge_sides_of(self, names: NameSets) -> None:
        self.set_names(tuple(names_union(mine, theirs)  # type: ignore[arg-type]
                             for mine, theirs in zip(self.names(), names, strict=True)))
