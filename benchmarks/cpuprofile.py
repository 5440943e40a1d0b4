"""Where the machine's CPU went during a run: `perf record -a -g` (cpu-clock samples on
every CPU) sorted into the observer's share, in the kernel and in its own process.

The rate ratios compare separate runs, and on a shared VM the speed of the machine
itself drifts between runs by more than the few percent being measured. A profile
measures inside one run: the share of samples whose stack passes through observer code
- a BPF program, the tracepoint or cgroup plumbing that calls it - plus the samples of
the observer process. 1 - that share estimates the rate ratio at saturation without
comparing two runs (it misses second-order costs such as cache pollution).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks import procs

PERF_PACKAGE = "linux-perf"
FREQUENCY_HZ = 499  # per CPU; enough samples in a few seconds, little perturbation
# Kernel frames that exist only to run BPF programs: the programs themselves, the
# classic-tracepoint record fill (perf_trace_<event>), the callers, the cgroup filters
# (skb, sock create, sock_ops) that run the sock_ops core's programs and the DNS tap.
_OBSERVER_FRAME = re.compile(
    r"^(bpf_prog_\w+|perf_trace_\w+|trace_call_bpf|bpf_trace_run\d+|__bpf_trace_run"
    r"|__cgroup_bpf_run_filter_(skb|sk|sock_ops)|__bpf_prog_run_save_cb)$")
# A CPU with nothing to run: the idle task (pid 0) halted. Left out of the total, since
# a rate at saturation follows the work done, not the time (softirq work that ran on
# the idle task's stack has other leaf frames and stays in).
_IDLE_LEAF = re.compile(r"(halt|_idle|mwait|idle_poll)\w*$")


@dataclass(frozen=True)
class Shares:
    samples: int     # busy samples: idle ones are left out
    kernel: float    # share inside BPF programs or the plumbing that calls them
    process: float   # share of the observer process (user and its own syscalls)
    idle: int = 0    # samples of a halted CPU


def perf_binary() -> str | None:
    return shutil.which("perf")


def ensure_perf(install: bool) -> str | None:
    """None when `perf` can record, else why not (the profile table is then skipped)."""
    if perf_binary() is None:
        if not install:
            return "perf not installed and --no-install given"
        if why := procs.apt_install(PERF_PACKAGE):
            return f"perf not installed: {why}"
        if perf_binary() is None:
            return f"{PERF_PACKAGE} installed but no perf on PATH"
    probe = subprocess.run([str(perf_binary()), "record", "-a", "-e", "cpu-clock", "-o",
                            "/dev/null", "--", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"perf record -a does not work here: {probe.stderr.strip()[-200:]}"
    return None


@contextmanager
def recording(path: Path) -> Iterator[None]:
    """perf record -a -g into `path` while the body runs."""
    proc = procs.spawn([str(perf_binary()), "record", "-a", "-g", "-e", "cpu-clock",
                        "-F", str(FREQUENCY_HZ), "-q", "-o", str(path)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        code = procs.stop(proc, signal.SIGINT, timeout=30)
        if code not in (0, -signal.SIGINT) or not path.exists():
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"perf record exited with {code}: {err.strip()[-200:]}")


def shares(path: Path, observer_pid: int | None) -> Shares:
    """Sort the samples of one recording (see the module docstring)."""
    out = subprocess.run([str(perf_binary()), "script", "-i", str(path), "-F", "pid,ip,sym"],
                         capture_output=True, text=True, timeout=300).stdout
    return classify(out, observer_pid)


def classify(script: str, observer_pid: int | None) -> Shares:
    """`perf script -F pid,ip,sym` text: a pid line per sample, then its frames
    (leaf first)."""
    samples = kernel = process = idle = 0
    for block in script.split("\n\n"):
        lines = block.strip("\n").splitlines()
        if not lines or not lines[0].strip().isdigit():
            continue
        leaf = lines[1].split() if len(lines) > 1 else []
        if int(lines[0]) == 0 and len(leaf) >= 2 and _IDLE_LEAF.search(leaf[1]):
            idle += 1
            continue
        samples += 1
        if observer_pid is not None and int(lines[0]) == observer_pid:
            process += 1
            continue
        for frame in lines[1:]:
            parts = frame.split()
            if len(parts) >= 2 and _OBSERVER_FRAME.match(parts[1]):
                kernel += 1
                break
    if not samples:
        return Shares(0, 0.0, 0.0, idle)
    return Shares(samples, kernel / samples, process / samples, idle)
