"""Child processes of the benchmark: all recorded, all killed on exit.

Each child gets PDEATHSIG=SIGKILL, so it dies with the benchmark even when the
benchmark itself is SIGKILLed; `stop_all()` ends the rest on normal exit or Ctrl-C.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_children: list[subprocess.Popen[Any]] = []


def spawn(argv: list[str], cpus: set[int] | None = None, **kwargs: Any) -> subprocess.Popen[Any]:
    """Popen with PDEATHSIG (and CPU affinity if given); stop_all() stops it if still running."""

    def prepare() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if cpus:
            os.sched_setaffinity(0, cpus)

    proc: subprocess.Popen[Any] = subprocess.Popen(argv, preexec_fn=prepare, **kwargs)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Signal one child and wait; SIGKILL if it does not exit in time. Returns its code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in _children:
        _children.remove(proc)
    return proc.returncode


def wait_rusage(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, float]:
    """Wait for a child to exit: (exit code, its user + system CPU seconds), from the
    kernel's accounting of the reaped child (a generator that reports no CPU itself).
    Killed (and an error) past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc in _children:
                _children.remove(proc)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            stop(proc, timeout=5)
            raise RuntimeError(f"{proc.args!r} still running after {timeout:.0f}s")
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def kill_leftovers(pids: list[int], comm: str) -> None:
    """SIGKILL those of `pids` still alive as `comm` (workers of a server that did not
    take them along when it was stopped)."""
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue  # gone already


def stop_all() -> None:
    for proc in list(_children):
        stop(proc, timeout=5.0)


def apt_install(package: str) -> str | None:
    """apt-get update && apt-get install -y PACKAGE: None when done, else why not."""
    if shutil.which("apt-get") is None:
        return "apt-get not found"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        except subprocess.TimeoutExpired:
            return f"'{' '.join(cmd)}' timed out"
        if done.returncode != 0:
            return f"'{' '.join(cmd)}' failed: {done.stderr.strip()[-300:]}"
    return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # fields 14 and 15 of stat


def machine_busy() -> tuple[float, float]:
    """(CPU seconds all CPUs spent busy, CPU seconds elapsed on all CPUs) since boot."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    total = sum(ticks[:8])  # guest time is already part of user
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


def machine_work() -> tuple[float, float]:
    """(CPU seconds all CPUs did work, CPU seconds the hypervisor stole) since boot.
    Work is user + nice + system + irq + softirq: every context, steal excluded."""
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:9]]
    return (t[0] + t[1] + t[2] + t[5] + t[6]) / _CLK_TCK, t[7] / _CLK_TCK


def memory_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def bpf_programs(pid: int) -> dict[int, tuple[int, int]]:
    """BPF programs whose fds `pid` holds: prog id -> (run_cnt, run_time_ns).

    run_* only advance while kernel.bpf_stats_enabled=1.
    """
    progs: dict[int, tuple[int, int]] = {}
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            fields = dict(line.split(":", 1) for line in info.read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue  # fd closed meanwhile
        if "prog_id" in fields:
            # A raw tracepoint's link fd names the same prog_id without run stats:
            # keep the program fd's figures, whichever fd comes first.
            stats = (int(fields.get("run_cnt", "0")), int(fields.get("run_time_ns", "0")))
            prog = int(fields["prog_id"])
            progs[prog] = max(progs.get(prog, (0, 0)), stats)
    return progs


def prog_arrays(pid: int) -> list[int]:
    """Ids of the BPF program arrays (tail-call tables) whose fds `pid` holds."""
    found = []
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("map_type", "").strip() == "3":  # BPF_MAP_TYPE_PROG_ARRAY
            found.append(int(fields["map_id"]))
    return found
