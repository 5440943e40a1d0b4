"""Which decoded records the map takes (pure): within the request's record cap, and
stamped inside the window with at most a small clock skew. A record from the far
future would open a bucket that never closes and hold the pending budget; one from
before the window would count as late into the newest bucket. Each refusal names
the record and the limit, for the OTLP partial-success reply."""

from __future__ import annotations

from datetime import timedelta

from traceprobe_api.ingest_limits import (
    MAX_CLOCK_SKEW_SECONDS,
    MAX_INTERVAL_SECONDS,
    MAX_RECORDS_PER_REQUEST,
)
from traceprobe_api.records import ConnectionRecord


def admit(records: list[ConnectionRecord], now: float, window_seconds: float,
          max_records: int = MAX_RECORDS_PER_REQUEST,
          ) -> tuple[list[ConnectionRecord], int, list[str]]:
    """The records to keep, how many were refused, and the refusals' reasons (one per
    cause, first record named)."""
    reasons: list[str] = []
    refused = 0
    if len(records) > max_records:
        refused = len(records) - max_records
        reasons.append(f"{refused} records over the limit of {max_records} per request "
                       "(send smaller requests)")
        records = records[:max_records]
    kept: list[ConnectionRecord] = []
    verdicts: dict[tuple[object, object], str | None] = {}  # records share a few stamps
    for i, r in enumerate(records):
        stamp = (r.interval_start, r.interval_end)
        if stamp not in verdicts:
            verdicts[stamp] = _untimely(r, now, window_seconds)
            if verdicts[stamp] is not None:
                reasons.append(f"record {i}: {verdicts[stamp]}")
        if verdicts[stamp] is None:
            kept.append(r)
        else:
            refused += 1
    return kept, refused, reasons


def _untimely(r: ConnectionRecord, now: float, window_seconds: float) -> str | None:
    end, start = r.interval_end.timestamp(), r.interval_start.timestamp()
    if end > now + MAX_CLOCK_SKEW_SECONDS:
        return (f"field 'intervalEnd': {r.interval_end.isoformat()} is more than "
                f"{MAX_CLOCK_SKEW_SECONDS:.0f}s ahead of the map's clock (check the node's clock)")
    if end < now - window_seconds:
        return (f"field 'intervalEnd': {r.interval_end.isoformat()} is older than the "
                f"map's {window_seconds:.0f}s window")
    if start > end or end - start > MAX_INTERVAL_SECONDS:
        return (f"field 'intervalStart': must be before 'intervalEnd' and at most "
                f"{timedelta(seconds=MAX_INTERVAL_SECONDS)} before it")
    return None
