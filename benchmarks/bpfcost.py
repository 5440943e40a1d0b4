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

from benchmarks import procs
from benchmarks.report import table
from benchmarks.results import Run
from benchmarks.workloads import UNITS, kind_of

SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


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


def tail_calls(pid: int) -> dict[str, list[str]]:
    """Programs that process `pid` reaches only by tail call -> the programs calling
    them (those of its programs that use the same program array), as the kernel has
    them. The kernel's run statistics are taken around the program a hook runs, so a
    tail call's runs are counted nowhere and its time is in its caller's."""
    arrays = procs.prog_arrays(pid)
    if not arrays:
        return {}
    progs = {p.get("id"): p for p in _bpftool("prog", "show")}
    mine = set(procs.bpf_programs(pid))
    called: dict[str, list[str]] = {}
    for array in arrays:
        targets = {_prog_id(e) for e in _bpftool("map", "dump", "id", str(array))}
        callers = sorted(str(progs[i].get("name")) for i in mine - targets
                         if i in progs and array in progs[i].get("map_ids", []))
        for t in targets:
            if t in progs:
                called[str(progs[t].get("name"))] = callers
    return called


def _prog_id(entry: dict[str, Any]) -> int:
    """The program id a program array's entry holds (bpftool's JSON, with or without
    BTF to format it)."""
    if isinstance(entry.get("formatted"), dict):
        return int(entry["formatted"]["value"])
    return int.from_bytes(bytes(int(b, 16) for b in entry.get("value", [])), "little")


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
    called = {prog: callers for r in runs for prog, callers in r.tail_calls.items()}
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
                if not cnt and prog in called:
                    row += ["tail call", f"in {'/'.join(called[prog])}"]
                    continue
                row += [f"{cnt / u:.2f}" if u else "n/a", f"{ns / cnt:.0f}" if cnt else "-"]
                total[w] = total.get(w, 0.0) + (ns / u if u else 0.0)
            rows.append(row)
        row = [variant, "TOTAL ns per conn (churn), exch (udp), req (http), MiB (bulk)"]
        for w in workloads:
            row += ["", f"{total[w]:,.0f}" if w in total and units.get(w) else "n/a"]
        rows.append(row)
    note = (f"\n  ({', '.join(sorted(called))}: tail called, so the kernel counts none of "
            "its runs: its time is in its callers' ns/run)") if called else ""
    return table(header, rows) + note
