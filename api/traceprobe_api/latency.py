"""Request latency buckets: the layout the kernel counts in (bpf/http_messages.h's
bucket_of) and the quantiles read back from it (pure).

Bucket 0 is under 1,024 ns; then four per octave, [2^o, 1.25·2^o), [1.25·2^o, 1.5·2^o),
[1.5·2^o, 1.75·2^o), [1.75·2^o, 2^(o+1)), for o = 10 … 34; the last bucket is 2^35 ns
(34 s) and above. A bucket is at most 25% of its lower bound wide, so a quantile read
from the buckets is within that of the true one.
"""

from __future__ import annotations

from collections.abc import Mapping

BUCKETS = 102
_FIRST_OCTAVE, _LAST_OCTAVE = 10, 34


def _bounds() -> tuple[int, ...]:
    bounds = [1 << _FIRST_OCTAVE]
    for octave in range(_FIRST_OCTAVE, _LAST_OCTAVE + 1):
        bounds += [(1 << octave) + (j + 1) * (1 << (octave - 2)) for j in range(4)]
    return tuple(bounds)


UPPER_BOUNDS_NS: tuple[int, ...] = _bounds()
"""Exclusive upper bound of buckets 0 … BUCKETS-2 (the last has none)."""


def bucket_of(ns: int) -> int:
    """The bucket a latency of `ns` falls in, as the kernel computes it."""
    if ns < (1 << _FIRST_OCTAVE):
        return 0
    octave = ns.bit_length() - 1
    if octave > _LAST_OCTAVE:
        return BUCKETS - 1
    return 1 + (octave - _FIRST_OCTAVE) * 4 + ((ns >> (octave - 2)) & 3)


def bucket_range(bucket: int) -> tuple[int, int]:
    """[low, high) of a bucket in ns; the last one's high is twice its low."""
    low = UPPER_BOUNDS_NS[bucket - 1] if bucket else 0
    high = UPPER_BOUNDS_NS[bucket] if bucket < BUCKETS - 1 else 2 * low
    return low, high


def quantiles(buckets: Mapping[int, int], *qs: float) -> list[float | None]:
    """The q-quantiles (ascending) in ns, interpolated linearly inside the bucket that
    holds each; None when there are no samples."""
    total = sum(buckets.values())
    if total <= 0:
        return [None] * len(qs)
    out: list[float | None] = []
    seen = 0
    for bucket in sorted(b for b, n in buckets.items() if n > 0):
        n = buckets[bucket]
        low, high = bucket_range(bucket)
        while len(out) < len(qs) and seen + n >= qs[len(out)] * total:
            inside = (qs[len(out)] * total - seen) / n
            out.append(low + (high - low) * min(1.0, max(0.0, inside)))
        seen += n
        if len(out) == len(qs):
            break
    return out
