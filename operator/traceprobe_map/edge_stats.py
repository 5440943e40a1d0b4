"""What the map knows about one edge: counts from the client's point of view,
a small RTT histogram, where NATed connections went, and who saw it (pure)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from sys import intern

from traceprobe_api.records import ConnectionRecord
from traceprobe_map.peers import Peer

COUNTERS = ("connections", "refused", "timeouts", "resets", "bytes_sent", "bytes_received",
            "retransmits", "rtt_sum_us", "rtt_samples", "duration_sum_ns")
_STEPS_PER_DOUBLING = 4  # RTT buckets ~19% wide: percentiles good to about that


def rtt_bucket(us: float) -> int:
    return int(math.log2(us if us > 1.0 else 1.0) * _STEPS_PER_DOUBLING)


def bucket_value(bucket: int) -> float:
    """Geometric middle of a bucket."""
    return float(2 ** ((bucket + 0.5) / _STEPS_PER_DOUBLING))


@dataclass(slots=True)  # no per-edge __dict__: a window holds ~200k of these
class EdgeStats:
    """Counts from the client's point of view: bytes_sent is src → dst."""

    connections: int = 0
    refused: int = 0
    timeouts: int = 0
    resets: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    retransmits: int = 0
    rtt_sum_us: int = 0
    rtt_samples: int = 0
    duration_sum_ns: int = 0
    rtt_max_us: int = 0
    rtt_histogram: Counter[int] = field(default_factory=Counter)
    """Per-record mean srtt bucket -> samples."""
    backends: Counter[Peer] = field(default_factory=Counter)
    """Service edges: connections per real destination workload."""
    observed_by: set[str] = field(default_factory=set)
    src_pods: set[str] = field(default_factory=set)
    """Pods on each end named by the records (namespace/name), and their nodes."""
    dst_pods: set[str] = field(default_factory=set)
    src_nodes: set[str] = field(default_factory=set)
    dst_nodes: set[str] = field(default_factory=set)
    probes: set[str] = field(default_factory=set)

    @property
    def failures(self) -> int:
        return self.refused + self.timeouts + self.resets

    def add(self, r: ConnectionRecord, as_server: bool, pod: str | None = None) -> None:
        """Count a record; `pod` is its local pod as `namespace/name` when the caller
        has it at hand (folding names each pod once, not once per record)."""
        self.connections += r.opened
        self.refused += r.refused
        self.timeouts += r.timeouts
        self.resets += r.resets
        # A server's "sent" is the client's "received".
        if as_server:
            self.bytes_sent += r.bytes_received
            self.bytes_received += r.bytes_sent
        else:
            self.bytes_sent += r.bytes_sent
            self.bytes_received += r.bytes_received
        self.retransmits += r.retransmits
        self.rtt_sum_us += r.rtt_sum_us
        samples = r.rtt_samples
        self.rtt_samples += samples
        self.duration_sum_ns += r.duration_sum_ns
        if r.rtt_max_us > self.rtt_max_us:
            self.rtt_max_us = r.rtt_max_us
        if samples:
            self.rtt_histogram[rtt_bucket(r.rtt_sum_us / samples)] += samples
        # Names are interned: every bucket of the window repeats the same few.
        node = intern(r.node) if type(r.node) is str else r.node
        if pod is None and r.k8s_pod and r.k8s_namespace:
            pod = intern(f"{r.k8s_namespace}/{r.k8s_pod}")
        if as_server:
            self.observed_by.add("server")
            if pod:
                self.dst_pods.add(pod)
            self.dst_nodes.add(node)
        else:
            self.observed_by.add("client")
            if pod:
                self.src_pods.add(pod)
            self.src_nodes.add(node)

    def absorb(self, other: EdgeStats) -> None:
        """Sum another window's (or another side's) stats into this one."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rtt_max_us = max(self.rtt_max_us, other.rtt_max_us)
        self.rtt_histogram.update(other.rtt_histogram)
        self.backends.update(other.backends)
        self.merge_sides(other)

    def subtract_counts(self, other: EdgeStats) -> None:
        """Take a bucket's counts back out (it left the window); names and the
        maximum cannot be subtracted: the caller recomputes those."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) - getattr(other, name))
        self.rtt_histogram.subtract(other.rtt_histogram)
        self.backends.subtract(other.backends)
        self.rtt_histogram = +self.rtt_histogram  # drop zero and negative entries
        self.backends = +self.backends

    def reset_names(self) -> None:
        self.rtt_max_us = 0
        for names in (self.observed_by, self.src_pods, self.dst_pods, self.src_nodes,
                      self.dst_nodes, self.probes):
            names.clear()

    def merge_sides(self, other: EdgeStats) -> None:
        """Who saw it, where: the other side's names without its counts."""
        self.observed_by |= other.observed_by
        self.src_pods |= other.src_pods
        self.dst_pods |= other.dst_pods
        self.src_nodes |= other.src_nodes
        self.dst_nodes |= other.dst_nodes
        self.probes |= other.probes

    def rtt_percentile(self, q: float) -> float | None:
        total = sum(self.rtt_histogram.values())
        if not total:
            return None
        seen = 0
        for bucket in sorted(self.rtt_histogram):
            seen += self.rtt_histogram[bucket]
            if seen >= q * total:
                return bucket_value(bucket)
        return bucket_value(max(self.rtt_histogram))
