"""The printed tables: machine facts, per-workload results, targets, BPF cost."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Sequence

from benchmarks.observers import REPO
from benchmarks.results import BASELINE, Run, Summary, summarise

TARGET_CONN_RATIO, TARGET_BULK_RATIO, TARGET_RSS_MB = 0.95, 0.97, 150.0
MB = 1e6
NA = "n/a"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = []
    for i, row in enumerate([header, *rows]):
        cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in
                 enumerate(zip(row, widths, strict=False))]
        lines.append(indent + "  ".join(cells).rstrip())
        if i == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def num(x: float | None, fmt: str = ",.0f") -> str:
    return NA if x is None else format(x, fmt)


def verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return NA
    good = value >= target if higher_is_better else value <= target
    return "ok" if good else "MISS"


def machine_facts() -> str:
    def first(path: str, key: str) -> str:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip() or "?"

    dirty = " (+ uncommitted changes)" if git("status", "--porcelain") != "?" else ""
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    facts = [
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("host", platform.node()),
        ("nproc", str(os.cpu_count())),
        ("cpu", first("/proc/cpuinfo", "model name")),
        ("memory", first("/proc/meminfo", "MemTotal")),
        ("kernel", f"{platform.release()} ({platform.version()})"),
        ("load avg", f"{load} at start (other work on this machine adds noise)"),
        ("traceprobe", f"{git('rev-parse', '--short', 'HEAD')}{dirty}"),
    ]
    return "\n".join(f"  {k:<11} {v}" for k, v in facts)


def _cell_unaccounted(s: Summary) -> str:
    u = s.unaccounted()
    return NA if u is None else f"{u[0]:,} / {u[1]:,}"


def churn_block(runs: list[Run], workload: str, variants: list[str]) -> tuple[str, Summary | None]:
    header = ["variant", "conn/s", "[min - max]", "ratio", f">={TARGET_CONN_RATIO}",
              "gen fail", "gen CPU us/conn", "obs CPU s/100k", "RSS MB", "peak MB",
              "drops/lost", "recorded/expected", "unaccounted cli/srv"]
    rows, agent = [], None
    for v in variants:
        s = summarise(runs, workload, v)
        agent = s if v == "traceprobe" else agent
        if not s.rates:
            rows.append([v, NA, "", "", "", "", "", "", "", "", "", "", _why(s)])
            continue
        is_obs = v != BASELINE
        recorded = [r.acc.client_conns for r in s.ok_runs() if r.acc and r.acc.client_conns
                    is not None]
        cpu = s.cpu_per_unit()
        rows.append([
            v, num(s.rate), f"[{min(s.rates):,.0f} - {max(s.rates):,.0f}]",
            num(s.ratio, ".3f"), verdict(s.ratio, TARGET_CONN_RATIO) if is_obs else "",
            f"{s.failed():,}", num(s.workload_cpu_per_conn_us(), ".1f"),
            num(cpu * 1e5 if cpu is not None else None, ".2f") if is_obs else "",
            num(_mb(s.rss()), ".1f") if is_obs else "",
            num(_mb(s.peak()), ".1f") if is_obs else "",
            num(s.drops()) if is_obs else "",
            f"{sum(recorded):,}/{s.expected():,}" if is_obs else f"-/{s.expected():,}",
            _cell_unaccounted(s) if is_obs else "",
        ])
    return table(header, rows), agent


def bulk_block(runs: list[Run], workload: str, variants: list[str]) -> tuple[str, Summary | None]:
    header = ["variant", "MB/s", "[min - max]", "ratio", f">={TARGET_BULK_RATIO}",
              "obs CPU s/GiB", "RSS MB", "peak MB", "drops/lost", "bytes counted/sent",
              "unaccounted cli/srv bytes"]
    rows, agent = [], None
    for v in variants:
        s = summarise(runs, workload, v)
        agent = s if v == "traceprobe" else agent
        if not s.rates:
            rows.append([v, NA, "", "", "", "", "", "", "", "", _why(s)])
            continue
        is_obs = v != BASELINE
        counted = [r.acc.client_bytes for r in s.ok_runs() if r.acc]
        known = [c for c in counted if c is not None]
        rows.append([
            v, num(_mb(s.rate)), f"[{min(s.rates) / MB:,.0f} - {max(s.rates) / MB:,.0f}]",
            num(s.ratio, ".3f"), verdict(s.ratio, TARGET_BULK_RATIO) if is_obs else "",
            num(s.cpu_per_unit(), ".3f") if is_obs else "",
            num(_mb(s.rss()), ".1f") if is_obs else "",
            num(_mb(s.peak()), ".1f") if is_obs else "",
            num(s.drops()) if is_obs else "",
            (f"{sum(known) / s.expected():.6f}" if known and len(known) == len(counted)
             and s.expected() else NA) if is_obs else "",
            _cell_unaccounted(s) if is_obs else "",
        ])
    return table(header, rows), agent


def targets_block(agents: dict[str, Summary | None]) -> str:
    rows = []
    conn: dict[str, Summary] = {w: s for w, s in agents.items()
                                if s and s.runs and _kind(s) == "churn"}
    bulk: dict[str, Summary] = {w: s for w, s in agents.items()
                                if s and s.runs and _kind(s) == "bulk"}
    for name, group, target in (("conn rate vs baseline", conn, TARGET_CONN_RATIO),
                                ("bulk throughput vs baseline", bulk, TARGET_BULK_RATIO)):
        for w, s in group.items():
            rows.append([f"{name} >= {target}", w, num(s.ratio, ".3f"), verdict(s.ratio, target)])
    for w, a in agents.items():
        if a is None or not a.runs:
            continue
        s = a
        u = s.unaccounted()
        drops = s.drops()
        lost = None if u is None else abs(u[0]) + abs(u[1]) + (drops or 0)
        unit = "bytes" if _kind(s) == "bulk" else "conns"
        rows.append(["zero unaccounted losses", w,
                     NA if u is None else f"cli {u[0]:,} srv {u[1]:,} {unit}, drops {drops}",
                     verdict(lost, 0, higher_is_better=False)])
    rss = [x for s in agents.values() if s for x in [s.rss()] if x is not None]
    worst = _mb(max(rss)) if rss else None
    rows.append([f"steady RSS <= {TARGET_RSS_MB:.0f} MB", "all (max of medians)",
                 num(worst, ".1f") + " MB", verdict(worst, TARGET_RSS_MB, False)])
    return table(["target (issue 4)", "workload", "traceprobe measured", "verdict"], rows)


def anomalies_block(runs: list[Run], workloads: list[str], variants: list[str]) -> str:
    lines = []
    for w in workloads:
        for v in variants:
            s = summarise(runs, w, v)
            if s.anomalies():
                found = ", ".join(f"{k} {n:,}" for k, n in sorted(s.anomalies().items()))
                lines.append(f"  {w} / {v}: {found} (summed over runs; counters, not losses)")
            lines += [f"  {w} / {v}: run failed: {e}" for e in s.errors]
    return "\n".join(lines)


def _kind(s: Summary) -> str:
    for r in s.runs:
        if r.result is not None:
            return r.result.workload.kind
    return "churn" if "churn" in s.workload else "bulk"


def _mb(x: float | None) -> float | None:
    return None if x is None else x / MB


def _why(s: Summary) -> str:
    return (s.errors[0][:70] + "...") if s.errors else "not run"
