"""The sliding window: records in, merged buckets kept, a snapshot out.

Records are grouped by the time they were observed (interval end) into fixed
buckets. A bucket is merged once, when no more records are expected for it
(its end plus the lateness allowance); records arriving later still count, in
the oldest open bucket. Merged buckets older than the window are forgotten, so
memory is bounded by edges times buckets, not by records. Pending records are
capped too: beyond the cap they are dropped and counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from traceprobe_api.records import ConnectionRecord
from traceprobe_map.edge_stats import EdgeStats
from traceprobe_map.merge import EdgeKey, MergeResult, ProbeMatcher, merge
from traceprobe_map.peers import Resolver
from traceprobe_map.snapshot import MapSnapshot, Overflow, build_snapshot

BucketSink = Callable[[dict[EdgeKey, EdgeStats]], None]


@dataclass
class WindowStats:
    records: int = 0
    late_records: int = 0  # arrived after their bucket was merged: counted in a newer one
    dropped_records: int = 0  # over max_pending_records
    udp_records: int = 0
    overflowed_edges: int = 0
    buckets_merged: int = 0
    last_merge_seconds: float = 0.0


@dataclass
class _Closed:
    start: float
    result: MergeResult


@dataclass
class MapWindow:
    resolver: Resolver
    cluster: str = "cluster"
    bucket_seconds: float = 10.0
    window_seconds: float = 300.0
    lateness_seconds: float = 15.0
    max_edges: int = 50_000
    max_pending_records: int = 1_000_000
    probes_of: ProbeMatcher | None = None
    on_bucket: BucketSink | None = None
    """Called with each merged bucket's edges (the OTLP exporter counts them)."""
    stats: WindowStats = field(default_factory=WindowStats)
    _pending: dict[float, list[ConnectionRecord]] = field(default_factory=dict)
    _closed: list[_Closed] = field(default_factory=list)
    _client_seen: dict[EdgeKey, float] = field(default_factory=dict)
    _started: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _bucket(self, at: float) -> float:
        return at - at % self.bucket_seconds

    def add(self, records: list[ConnectionRecord], now: float) -> int:
        """Queue records for merging; returns how many were dropped (cap)."""
        with self.lock:
            if self._started is None:
                self._started = now
            pending = sum(len(v) for v in self._pending.values())
            room = max(0, self.max_pending_records - pending)
            dropped = max(0, len(records) - room)
            newest_closed = self._closed[-1].start if self._closed else -1.0
            for record in records[:room]:
                bucket = self._bucket(record.interval_end.timestamp())
                if bucket <= newest_closed:
                    self.stats.late_records += 1
                    bucket = newest_closed + self.bucket_seconds
                self._pending.setdefault(bucket, []).append(record)
            self.stats.records += len(records) - dropped
            self.stats.dropped_records += dropped
            return dropped

    def close_due(self, now: float) -> int:
        """Merge every bucket whose records are all in; return how many."""
        merged = 0
        while True:
            with self.lock:
                due = [b for b in self._pending
                       if b + self.bucket_seconds + self.lateness_seconds <= now]
                if not due:
                    break
                start = min(due)
                records = self._pending.pop(start)
                result = self._merge(records, now)
                self._closed.append(_Closed(start, result))
                self._closed.sort(key=lambda c: c.start)
                horizon = now - self.window_seconds - self.bucket_seconds - self.lateness_seconds
                self._closed = [c for c in self._closed if c.start >= horizon]
                self._client_seen = {k: t for k, t in self._client_seen.items()
                                     if t >= now - 3 * self.bucket_seconds - self.lateness_seconds}
            merged += 1
            if self.on_bucket is not None:
                self.on_bucket(result.edges)
        return merged

    def _merge(self, records: list[ConnectionRecord], now: float) -> MergeResult:
        started = datetime.now(UTC).timestamp()
        result = merge(records, self.resolver, set(self._client_seen), self.probes_of,
                       self.max_edges)
        for key, stats in result.edges.items():
            if "client" in stats.observed_by:
                self._client_seen[key] = now
        self.stats.udp_records += result.udp_records
        self.stats.overflowed_edges += result.overflowed_edges
        self.stats.buckets_merged += 1
        self.stats.last_merge_seconds = datetime.now(UTC).timestamp() - started
        return result

    def snapshot(self, window_seconds: float | None = None,
                 now: float | None = None) -> MapSnapshot:
        """Merged edges over the last `window_seconds` (default: the whole window),
        including records not yet merged into a bucket."""
        now = datetime.now(UTC).timestamp() if now is None else now
        span = min(window_seconds or self.window_seconds, self.window_seconds)
        since = now - span
        with self.lock:
            covered = min(span, now - self._started) if self._started is not None else span
            totals: dict[EdgeKey, EdgeStats] = {}
            overflowed = 0
            for closed in self._closed:
                if closed.start + self.bucket_seconds > since:
                    overflowed += closed.result.overflowed_edges
                    _add_all(totals, closed.result.edges)
            fresh = [r for b, rs in self._pending.items() if b + self.bucket_seconds > since
                     for r in rs]
            if fresh:
                result = merge(fresh, self.resolver, set(self._client_seen), self.probes_of,
                               self.max_edges)
                overflowed += result.overflowed_edges
                _add_all(totals, result.edges)
        return build_snapshot(totals, self.cluster, max(covered, self.bucket_seconds),
                              datetime.fromtimestamp(now, UTC),
                              Overflow(edges=overflowed, externals=self.resolver.overflowed))


def _add_all(totals: dict[EdgeKey, EdgeStats], edges: dict[EdgeKey, EdgeStats]) -> None:
    for key, stats in edges.items():
        mine = totals.get(key)
        if mine is None:
            mine = totals[key] = EdgeStats()
        mine.absorb(stats)
