"""The map's own cumulative sums: a series lives while its edge is counted, saturates
at int64's maximum, and starts again (new start time) if its edge comes back."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import NumberDataPoint

from traceprobe_map.series import INT64_MAX, Instrument, SeriesStore

BYTES = Instrument("traceprobe.edge.bytes", "By", "")


def _points(store: SeriesStore, now_ns: int) -> dict[str, tuple[int, int]]:
    points = [p for m in store.metrics(now_ns) for p in m.data.data_points
              if isinstance(p, NumberDataPoint)]
    return {str((p.attributes or {})["edge"]): (int(p.value), p.start_time_unix_nano)
            for p in points}


def test_series_live_while_counted_and_go_a_window_after() -> None:
    store = SeriesStore(keep_seconds=300)
    store.add(BYTES, 10, {"edge": "a"}, now=0, now_ns=1)
    store.add(BYTES, 5, {"edge": "b"}, now=0, now_ns=1)
    store.add(BYTES, 0, {"edge": "c"}, now=0, now_ns=1)  # zero: no series
    store.add(BYTES, 7, {"edge": "a"}, now=200, now_ns=2)
    assert _points(store, 3) == {"a": (17, 1), "b": (5, 1)}
    assert store.prune(now=301) == 1  # b not counted for 301 s
    assert _points(store, 4) == {"a": (17, 1)}
    store.add(BYTES, 2, {"edge": "b"}, now=302, now_ns=5)
    assert _points(store, 6) == {"a": (17, 1), "b": (2, 5)}  # started again
    assert store.prune(now=10_000) == 2 and len(store) == 0 and not list(store.metrics(7))


def test_sums_saturate_and_new_series_beyond_the_cap_are_counted() -> None:
    store = SeriesStore(keep_seconds=300, max_series=1)
    store.add(BYTES, INT64_MAX - 1, {"edge": "a"}, now=0, now_ns=1)
    store.add(BYTES, 2**70, {"edge": "a"}, now=0, now_ns=1)
    store.add(BYTES, 1, {"edge": "b"}, now=0, now_ns=1)
    assert _points(store, 2) == {"a": (INT64_MAX, 1)} and store.dropped_series == 1


def test_exports_go_in_requests_of_bounded_points_none_lost() -> None:
    """10,000 edges are ~58,000 points, over a Collector's default request size in one:
    the exporter sends them in requests of at most POINTS_PER_REQUEST points."""
    from traceprobe_map.export import _batches

    store = SeriesStore(keep_seconds=300)
    for instrument, n in ((BYTES, 3), (Instrument("b", "", ""), 7), (Instrument("c", "", ""), 2)):
        for i in range(n):
            store.add(instrument, i + 1, {"edge": f"{instrument.name}-{i}"}, now=0, now_ns=1)
    metrics = list(store.metrics(2))
    batches = list(_batches(metrics, 5))
    assert [sum(len(m.data.data_points) for m in b) for b in batches] == [5, 5, 2]
    sent = [(m.name, p.attributes) for b in batches for m in b for p in m.data.data_points]
    assert sent == [(m.name, p.attributes) for m in metrics for p in m.data.data_points]
