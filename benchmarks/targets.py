"""The Targets table: per connection core, the rate targets (rate, work-est and the
profile's estimate, the headline), its programs' cost over its own hooks-only floor, its
losses and its steady RSS."""

from __future__ import annotations

from collections.abc import Iterator

from benchmarks.observers import CORES
from benchmarks.report import (
    NA,
    TARGET_BULK_RATIO,
    TARGET_CONN_RATIO,
    TARGET_OVER_FLOOR,
    TARGET_RSS_MB,
    num,
    prof_est,
    table,
    to_mb,
    verdict,
)
from benchmarks.results import Run, Summary
from benchmarks.workloads import kind_of


def targets_block(summaries: dict[str, dict[str, Summary]], profiled: list[Run]) -> str:
    """Per workload and core: the rate targets, its programs' cost over its own floor and
    its losses; per core: steady RSS. `summaries`: workload -> variant -> Summary."""
    rows = []
    measured = list(_measured(summaries))
    for kind, target in (("churn", TARGET_CONN_RATIO), ("bulk", TARGET_BULK_RATIO)):
        name = "conn rate" if kind == "churn" else "bulk throughput"
        for w, core, s in measured:
            if _kind(s) != kind:
                continue
            # Verdicts on the rate itself, on its estimate from the work each connection
            # costs (which the hypervisor's steal does not blur) and on the profile's
            # (inside one run: the headline).
            prof = prof_est(profiled, w, core)
            rows.append([f"{name} vs baseline >= {target}", w, core,
                         f"{num(s.ratio, '.3f')} (med/med {num(s.rate_of_medians, '.3f')}, "
                         f"cpu-est {num(s.cpu_ratio, '.3f')}, work-est "
                         f"{num(s.machine_ratio, '.3f')}, prof-est {num(prof, '.3f')})",
                         f"rate {verdict(s.ratio, target)}, "
                         f"work-est {verdict(s.machine_ratio, target)}, "
                         f"prof-est {verdict(prof, target)}"])
    for w, core, _ in measured:
        prof, floor = prof_est(profiled, w, core), prof_est(profiled, w, f"hooks-{core}")
        over = None if prof is None or floor is None else floor - prof
        rows.append([f"programs over own floor <= {100 * TARGET_OVER_FLOOR:.1f} pt", w, core,
                     f"{num(100 * over if over is not None else None, '.2f')} pt (hooks-{core} "
                     f"prof-est {num(floor, '.3f')} - {num(prof, '.3f')})",
                     verdict(over, TARGET_OVER_FLOOR, higher_is_better=False)])
    for w, core, s in measured:
        u, drops = s.unaccounted(), s.drops()
        lost = None if u is None else abs(u[0]) + abs(u[1]) + (drops or 0)
        unit = {"bulk": "bytes", "udp": "datagrams"}.get(_kind(s), "conns")
        rows.append(["zero unaccounted losses", w, core,
                     NA if u is None else f"cli {u[0]:,} srv {u[1]:,} {unit}, drops {drops}",
                     verdict(lost, 0, higher_is_better=False)])
    for core in dict.fromkeys(core for _, core, _ in measured):
        rss = [x for _, c, s in measured if c == core and (x := s.rss()) is not None]
        worst = to_mb(max(rss)) if rss else None
        rows.append([f"steady RSS <= {TARGET_RSS_MB:.0f} MB", "all (max of medians)", core,
                     num(worst, ".1f") + " MB", verdict(worst, TARGET_RSS_MB, False)])
    return table(["target", "workload", "core", "measured", "verdict"], rows)


def _measured(summaries: dict[str, dict[str, Summary]]) -> Iterator[tuple[str, str, Summary]]:
    """(workload, core, summary) of each core that ran on each workload."""
    for w, by_variant in summaries.items():
        for core in CORES:
            if (s := by_variant.get(core)) is not None and s.runs:
                yield w, core, s


def _kind(s: Summary) -> str:
    for r in s.runs:
        if r.result is not None:
            return r.result.workload.kind
    return kind_of(s.workload)
