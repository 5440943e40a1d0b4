"""Cumulative OTLP sums the map keeps itself (pure, apart from the clock passed in).

The SDK's counters keep every attribute set they ever saw for the life of the process
(and fold new ones into an overflow point past their cap), so edges that are long gone
would keep being exported and new ones would lose their names. Here each series lives
while its edge does: one not counted for `keep_seconds` is dropped and no longer
exported (should the edge come back, its sum starts again, with a new start time, as
cumulative temporality says). Sums saturate at int64's maximum, what OTLP can carry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

from traceprobe_api.latency import BUCKETS, UPPER_BOUNDS_NS, bucket_range

INT64_MAX = 2**63 - 1
Attributes = tuple[tuple[str, Any], ...]


@dataclass(slots=True)
class _Total:
    value: int
    start_ns: int
    updated: float


@dataclass(slots=True)
class _Buckets:
    """A cumulative latency histogram in the kernel's buckets (traceprobe_api.latency)."""

    counts: list[int]
    sum_ns: int
    start_ns: int
    updated: float


@dataclass(frozen=True)
class Instrument:
    name: str
    unit: str
    description: str


SECONDS_BOUNDS = tuple(ns / 1e9 for ns in UPPER_BOUNDS_NS)
"""The kernel's bucket bounds as a histogram's explicit bounds, in seconds."""


@dataclass
class SeriesStore:
    keep_seconds: float
    max_series: int = 200_000
    """Per instrument; beyond it a new series is dropped and counted (the map's own edge
    cap keeps far below it)."""
    dropped_series: int = 0
    _totals: dict[Instrument, dict[Attributes, _Total]] = field(default_factory=dict)
    _histograms: dict[Instrument, dict[Attributes, _Buckets]] = field(default_factory=dict)

    def add_histogram(self, instrument: Instrument, buckets: dict[int, int], sum_ns: int,
                      attributes: dict[str, Any], now: float, now_ns: int) -> None:
        """Latency bucket -> samples (and their sum) added to a cumulative histogram."""
        if not buckets:
            return
        series = self._histograms.setdefault(instrument, {})
        key = tuple(attributes.items())
        total = series.get(key)
        if total is None:
            if len(series) >= self.max_series:
                self.dropped_series += 1
                return
            total = series[key] = _Buckets([0] * BUCKETS, 0, now_ns, now)
        for bucket, n in buckets.items():
            total.counts[bucket] += n
        total.sum_ns += sum_ns
        total.updated = now

    def add(self, instrument: Instrument, n: int, attributes: dict[str, Any], now: float,
            now_ns: int) -> None:
        if n <= 0:
            return
        series = self._totals.setdefault(instrument, {})
        key = tuple(attributes.items())  # built in one order by the exporter: a stable key
        total = series.get(key)
        if total is None:
            if len(series) >= self.max_series:
                self.dropped_series += 1
                return
            series[key] = _Total(min(n, INT64_MAX), now_ns, now)
            return
        total.value = min(total.value + n, INT64_MAX)
        total.updated = now

    def prune(self, now: float) -> int:
        """Forget series not counted for keep_seconds; return how many."""
        gone = 0
        every: list[dict[Attributes, Any]] = [*self._totals.values(), *self._histograms.values()]
        for series in every:
            stale = [k for k, t in series.items() if now - t.updated > self.keep_seconds]
            for key in stale:
                del series[key]
            gone += len(stale)
        return gone

    def __len__(self) -> int:
        return sum(len(s) for s in self._totals.values()) + sum(
            len(s) for s in self._histograms.values())

    def metrics(self, now_ns: int) -> Iterator[Metric]:
        """Every live series as a cumulative, monotonic sum at `now_ns`."""
        for instrument, series in self._totals.items():
            if not series:
                continue
            points = [NumberDataPoint(attributes=dict(key), start_time_unix_nano=t.start_ns,
                                      time_unix_nano=now_ns, value=t.value)
                      for key, t in series.items()]
            yield Metric(name=instrument.name, description=instrument.description,
                         unit=instrument.unit, data=Sum(
                             data_points=points, is_monotonic=True,
                             aggregation_temporality=AggregationTemporality.CUMULATIVE))
        for instrument, buckets in self._histograms.items():
            if not buckets:
                continue
            yield Metric(name=instrument.name, description=instrument.description,
                         unit=instrument.unit, data=Histogram(
                             data_points=[_histogram_point(key, b, now_ns)
                                          for key, b in buckets.items()],
                             aggregation_temporality=AggregationTemporality.CUMULATIVE))


def _histogram_point(key: Attributes, b: _Buckets, now_ns: int) -> HistogramDataPoint:
    """min and max are the bounds of the lowest and highest buckets holding samples: the
    kernel keeps buckets, not samples."""
    held = [i for i, n in enumerate(b.counts) if n]
    return HistogramDataPoint(
        attributes=dict(key), start_time_unix_nano=b.start_ns, time_unix_nano=now_ns,
        count=sum(b.counts), sum=b.sum_ns / 1e9, bucket_counts=list(b.counts),
        explicit_bounds=SECONDS_BOUNDS, min=bucket_range(held[0])[0] / 1e9,
        max=bucket_range(held[-1])[1] / 1e9)
