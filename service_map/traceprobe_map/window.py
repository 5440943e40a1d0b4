"""The sliding window: records in, merged buckets kept, a snapshot out.

Records are grouped by the time they were observed (interval end) into fixed
buckets and folded into the bucket's stats as they arrive, so no record is
kept. A bucket is finished once, when no more records are expected for it
(its end plus the lateness allowance); records arriving later still count, in
the oldest open bucket. Finished buckets older than the window are dropped,
their counts taken out of running totals, so a snapshot of the whole window
costs the edges it shows, not the buckets it spans. Memory is bounded by
edges times buckets.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from traceprobe_api.records import ConnectionRecord
from traceprobe_map.buckets import EdgeKey, MergeResult, Partial, Recent
from traceprobe_map.edge_stats import MAXIMA, NO_NAME_SETS, EdgeStats, NameSets
from traceprobe_map.merge import ProbeMatcher, finish, fold
from traceprobe_map.peers import Resolver
from traceprobe_map.snapshot import MapSnapshot, Overflow, build_snapshot

BucketSink = Callable[[dict[EdgeKey, EdgeStats]], None]


@dataclass
class WindowStats:
    records: int = 0
    late_records: int = 0  # arrived after their bucket was finished: counted in a newer one
    dropped_records: int = 0  # over max_pending_records, or new edges over a bucket's cap
    udp_records: int = 0
    loopback_records: int = 0
    reused_address_records: int = 0
    overflowed_edges: int = 0
    buckets_merged: int = 0
    last_merge_seconds: float = 0.0


@dataclass(slots=True)
class _Total:
    """An edge over the whole window: summed counts, and what cannot be subtracted
    when a bucket leaves (names, the RTT maxima) kept as counts of the buckets
    carrying each value, so a leaving bucket costs its edges, not the window."""

    stats: EdgeStats
    names: Counter[NameSets]
    maxima: tuple[Counter[int], ...]
    """One per edge_stats.MAXIMA field, in that order."""


@dataclass
class _Closed:
    start: float
    result: MergeResult


@dataclass(frozen=True)
class WindowContents:
    """What the window holds at one moment: the window's own objects, to read, not
    to change (for gauges and for weighing its memory)."""

    open: dict[float, Partial]
    """Bucket start -> the records folded so far."""
    finished: list[tuple[float, MergeResult]]
    """(bucket start, its edges), oldest first."""
    totals: dict[EdgeKey, _Total]
    recently: list[tuple[float, Recent]]

    @property
    def pending_records(self) -> int:
        return sum(part.records for part in self.open.values())


@dataclass
class MapWindow:
    resolver: Resolver
    cluster: str = "cluster"
    bucket_seconds: float = 10.0
    window_seconds: float = 300.0
    lateness_seconds: float = 15.0
    max_edges: int = 50_000
    max_pending_records: int = 1_000_000
    """Records folded into open buckets at most (CPU bound per bucket)."""
    probes_of: ProbeMatcher | None = None
    on_bucket: BucketSink | None = None
    """Called with each finished bucket's edges (the OTLP exporter counts them)."""
    stats: WindowStats = field(default_factory=WindowStats)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: dict[float, Partial] = field(default_factory=dict)
    _closed: list[_Closed] = field(default_factory=list)
    _totals: dict[EdgeKey, _Total] = field(default_factory=dict)
    # Client-side facts of recently finished buckets, with when (see Recent).
    _recently: list[tuple[float, Recent]] = field(default_factory=list)
    _started: float | None = None

    def contents(self) -> WindowContents:
        with self.lock:
            return WindowContents(dict(self._pending),
                                  [(c.start, c.result) for c in self._closed],
                                  self._totals, list(self._recently))

    def _bucket(self, at: float) -> float:
        return at - at % self.bucket_seconds

    def _place(self, end: datetime) -> tuple[float, bool]:
        """The bucket for records that ended at `end`, and whether they came late
        (their bucket is finished: they count in the oldest open one)."""
        bucket = self._bucket(end.timestamp())
        newest_closed = self._closed[-1].start if self._closed else -1.0
        if bucket <= newest_closed:
            return newest_closed + self.bucket_seconds, True
        return bucket, False

    def add(self, records: list[ConnectionRecord], now: float) -> int:
        """Fold records into their buckets; returns how many were dropped (cap)."""
        with self.lock:
            if self._started is None:
                self._started = now
            pending = sum(p.records for p in self._pending.values())
            room = max(0, self.max_pending_records - pending)
            dropped = max(0, len(records) - room)
            kept = records[:room] if dropped else records
            by_bucket: dict[float, list[ConnectionRecord]] = {}
            ends = {r.interval_end for r in kept}
            if len(ends) == 1:  # the usual request: one agent's interval
                bucket, late = self._place(ends.pop())
                by_bucket[bucket] = kept
                self.stats.late_records += len(kept) if late else 0
            else:
                placed = {end: self._place(end) for end in ends}
                for record in kept:
                    bucket, late = placed[record.interval_end]
                    by_bucket.setdefault(bucket, []).append(record)
                    self.stats.late_records += late
            for bucket, batch in by_bucket.items():
                part = self._pending.get(bucket) or Partial(max_keys=4 * self.max_edges)
                before = part.dropped_records
                self._pending[bucket] = fold(batch, self.resolver, self.probes_of, part)
                dropped += part.dropped_records - before  # the bucket is at its edge cap
            self.stats.records += len(records) - dropped
            self.stats.dropped_records += dropped
            return dropped

    def close_due(self, now: float) -> int:
        """Finish every bucket whose records are all in; return how many."""
        merged = 0
        while True:
            with self.lock:
                due = [b for b in self._pending
                       if b + self.bucket_seconds + self.lateness_seconds <= now]
                if not due:
                    break
                start = min(due)
                result = self._finish(self._pending.pop(start), now)
                self._closed.append(_Closed(start, result))
                self._closed.sort(key=lambda c: c.start)
                _enter(self._totals, result.edges)
                self._expire(now)
            merged += 1
            if self.on_bucket is not None:
                self.on_bucket(result.edges)
        with self.lock:
            self._expire(now)
        return merged

    def _finish(self, part: Partial, now: float) -> MergeResult:
        started = time.monotonic()
        # `part` has left _pending already: every bucket still there is a neighbour.
        result = finish(part, self.resolver, self._recent(), self.max_edges)
        self._recently.append((now, Recent.of(part)))
        self.stats.udp_records += result.udp_records
        self.stats.loopback_records += result.loopback_records
        self.stats.reused_address_records += result.reused_address_records
        self.stats.overflowed_edges += result.overflowed_edges
        self.stats.buckets_merged += 1
        self.stats.last_merge_seconds = time.monotonic() - started
        return result

    def _expire(self, now: float) -> None:
        horizon = now - self.window_seconds - self.bucket_seconds - self.lateness_seconds
        leaving = [c for c in self._closed if c.start < horizon]
        if leaving:
            self._closed = [c for c in self._closed if c.start >= horizon]
            for closed in leaving:
                _leave(self._totals, closed.result.edges)
        recent = now - 3 * self.bucket_seconds - self.lateness_seconds
        self._recently = [(t, r) for t, r in self._recently if t >= recent]

    def _recent(self, besides: float | None = None) -> Recent:
        """Client-side facts of the buckets finished lately and of every open bucket but
        `besides` (the one being finished: its own facts are in its Partial)."""
        recent = Recent()
        for _, finished in self._recently:
            recent.update(finished)
        for bucket, part in self._pending.items():
            if bucket != besides:
                recent.update(Recent.of(part))
        return recent

    def snapshot(self, window_seconds: float | None = None,
                 now: float | None = None) -> MapSnapshot:
        """Edges over the last `window_seconds` (default: the whole window),
        open buckets included."""
        now = time.time() if now is None else now
        span = min(window_seconds or self.window_seconds, self.window_seconds)
        since = now - span
        totals: dict[EdgeKey, EdgeStats] = {}
        with self.lock:  # held by ingest too: only what changes under it is read here
            covered = min(span, now - self._started) if self._started is not None else span
            whole = span >= self.window_seconds
            kept = [c for c in self._closed if whole or c.start + self.bucket_seconds > since]
            overflowed = sum(c.result.overflowed_edges for c in kept)
            if whole:  # the running totals change at every close: summed under the lock
                _add_all(totals, ((k, t.stats) for k, t in self._totals.items()))
            parts = [finish(part, self.resolver, self._recent(besides=bucket), self.max_edges)
                     for bucket, part in self._pending.items()
                     if bucket + self.bucket_seconds > since]
        # A closed bucket's result never changes: a part of the window is summed after
        # the lock is released, so a long window of many edges does not stall ingest.
        if not whole:
            _add_all(totals, (kv for c in kept for kv in c.result.edges.items()))
        for result in parts:
            overflowed += result.overflowed_edges
            _add_all(totals, result.edges.items())
        return build_snapshot(totals, self.cluster, max(covered, self.bucket_seconds),
                              datetime.fromtimestamp(now, UTC),
                              Overflow(edges=overflowed, externals=self.resolver.overflowed))


def _add_all(totals: dict[EdgeKey, EdgeStats],
             edges: dict[EdgeKey, EdgeStats] | Iterable[tuple[EdgeKey, EdgeStats]]) -> None:
    items = edges.items() if isinstance(edges, dict) else edges
    for key, stats in items:
        mine = totals.get(key)
        if mine is None:
            mine = totals[key] = EdgeStats()
        mine.absorb(stats)


def _enter(totals: dict[EdgeKey, _Total], edges: dict[EdgeKey, EdgeStats]) -> None:
    """A finished bucket joins the running totals."""
    for key, stats in edges.items():
        total = totals.get(key)
        if total is None:
            total = totals[key] = _Total(EdgeStats(), Counter(),
                                         tuple(Counter() for _ in MAXIMA))
        mine = total.stats
        mine.add_counts(stats)
        names = stats.names()
        if names not in total.names:
            mine.merge_sides(stats)
        total.names[names] += 1
        for name, maxima in zip(MAXIMA, total.maxima, strict=True):
            maxima[getattr(stats, name)] += 1
        mine.add_maxima(stats)


def _leave(totals: dict[EdgeKey, _Total], edges: dict[EdgeKey, EdgeStats]) -> None:
    """A bucket leaves the window: its counts out, its names and maximum only when no
    bucket still in carries them."""
    for key, stats in edges.items():
        total = totals[key]
        names = stats.names()
        total.names[names] -= 1
        if not total.names[names]:
            del total.names[names]
            if not total.names:
                del totals[key]
                continue
            mine = total.stats
            mine.set_names(NO_NAME_SETS)
            for kept in total.names:
                mine.merge_sides_of(kept)
        mine = total.stats
        mine.subtract_counts(stats)
        for name, maxima in zip(MAXIMA, total.maxima, strict=True):
            peak = getattr(stats, name)
            maxima[peak] -= 1
            if not maxima[peak]:
                del maxima[peak]
                if peak == getattr(mine, name):
                    setattr(mine, name, max(maxima, default=0))
