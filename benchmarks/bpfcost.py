"""Per-program BPF cost (kernel.bpf_stats_enabled=1): run counts and time per run.

The statistics cost a little themselves (two clock reads per program run), so
they are enabled only for a separate, shorter pass whose rates are not used in
the ratio tables.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.report import table
from benchmarks.results import Run
from benchmarks.workloads import UNITS, kind_of

SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
# Programs the agent reaches only by tail call, and their callers. The kernel's run
# statistics are taken around the program a hook runs, so a tail call's runs are
# counted nowhere and its time is in its caller's.
TAIL_CALLED = {"http_out": "on_egress", "http_in": "on_ingress"}


def foreign_hooks(cgroup_root: Path | None) -> list[str]:
    """BPF programs already on hooks the traffic passes (the cgroup v2 root's, and
    tracepoints and kprobes): another agent or a test run, which every variant pays."""
    found = []
    if cgroup_root is not None:
        found += [f"{p.get('attach_type')} {p.get('name')}"
                  for p in _bpftool("cgroup", "show", str(cgroup_root))]
    found += [f"{p.get('fd_type')} {p.get('tracepoint') or p.get('func')} (pid {p.get('pid')})"
              for p in _bpftool("perf", "show")]
    return found


def _bpftool(*args: str) -> list[dict[str, Any]]:
    try:
        out = subprocess.run(["bpftool", *args, "--json"], capture_output=True, text=True,
                             timeout=30).stdout
        found = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    return found if isinstance(found, list) else []


@contextmanager
def stats_enabled() -> Iterator[bool]:
    """Turn the kernel's BPF run statistics on, and back to what they were."""
    try:
        old = SYSCTL.read_text().strip()
        SYSCTL.write_text("1")
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        SYSCTL.write_text(old)


def render(runs: list[Run]) -> str:
    """Rows per observer and program; columns per workload: runs/unit, ns/run."""
    workloads = list(dict.fromkeys(r.workload for r in runs))
    header = ["observer", "program"]
    for w in workloads:
        unit = UNITS[kind_of(w)]
        header += [f"{w} runs/{unit}", "ns/run"]
    rows = []
    for variant in dict.fromkeys(r.variant for r in runs):
        per_prog: dict[str, dict[str, tuple[int, int]]] = {}
        units: dict[str, float] = {}
        for r in runs:
            if r.variant != variant or not r.ok or r.result is None:
                continue
            res = r.result
            units[r.workload] = (res.completed if res.workload.exchanges
                                 else res.bytes_sent / 2**20)
            for prog, (cnt, ns) in r.bpf.items():
                short = prog.removeprefix("tracepoint__").replace("__", ":", 1)
                per_prog.setdefault(short, {})[r.workload] = (cnt, ns)
        total: dict[str, float] = {}
        for prog in sorted(per_prog):
            row = [variant, prog]
            for w in workloads:
                cnt, ns = per_prog[prog].get(w, (0, 0))
                u = units.get(w) or 0
                if not cnt and prog in TAIL_CALLED:
                    row += ["tail call", f"in {TAIL_CALLED[prog]}"]
                    continue
                row += [f"{cnt / u:.2f}" if u else "n/a", f"{ns / cnt:.0f}" if cnt else "-"]
                total[w] = total.get(w, 0.0) + (ns / u if u else 0.0)
            rows.append(row)
        row = [variant, "TOTAL ns per conn (churn), exch (udp), req (http), MiB (bulk)"]
        for w in workloads:
            row += ["", f"{total[w]:,.0f}" if w in total and units.get(w) else "n/a"]
        rows.append(row)
    shown = sorted({p for r in runs for p in r.bpf} & set(TAIL_CALLED))
    note = (f"\n  ({', '.join(shown)}: tail calls, whose runs the kernel does not count; "
            f"their time is in their callers' ns/run: "
            f"{', '.join(f'{p} in {TAIL_CALLED[p]}' for p in shown)})") if shown else ""
    return table(header, rows) + note
