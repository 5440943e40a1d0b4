"""An open bucket is bounded by edges as well as records: records that would add an
edge beyond the cap are dropped and counted, records of its known edges still count."""

from __future__ import annotations

from datetime import UTC, datetime

from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_map.buckets import Partial
from traceprobe_map.merge import fold
from traceprobe_map.peers import Resolver
from traceprobe_map.window import MapWindow

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _to(port: int, role: Role = Role.CLIENT) -> ConnectionRecord:
    client = role is Role.CLIENT
    return ConnectionRecord(node="n1", role=role, transport="tcp", family="ipv4",
                            remote_ip="10.0.0.2", interval_start=AT, interval_end=AT, opened=1,
                            remote_port=port if client else None,
                            local_port=None if client else port)


def test_new_edges_beyond_the_cap_are_dropped_and_known_ones_still_count() -> None:
    part = fold([_to(1), _to(2), _to(3), _to(4, Role.SERVER), _to(1)], Resolver(),
                into=Partial(max_keys=2))
    assert sorted(k.port or 0 for k in part.client) == [1, 2] and not part.server
    assert part.client[next(k for k in part.client if k.port == 1)].connections == 2
    assert part.dropped_records == 2


def test_the_window_counts_them_as_dropped_and_says_so() -> None:
    window = MapWindow(Resolver(), "c", bucket_seconds=10, window_seconds=60,
                       lateness_seconds=5, max_edges=1)  # 4 edges per bucket
    now = AT.timestamp()
    assert window.add([_to(p) for p in range(1, 7)], now) == 2
    assert window.stats.dropped_records == 2 and window.stats.records == 4
