"""Agent overhead: what the traceprobe agent costs the traffic it watches, with each of
its connection cores.

Runs, interleaved in one invocation (per repeat and workload: baseline, tracepoint,
sock_ops, sock_ops-http, hooks-tracepoint, hooks-sock_ops, tcplife), a connection-churn
workload on loopback and between two network namespaces, a bulk-transfer workload, UDP
request/response datagrams between the namespaces (the agent with its udp kind on;
tcplife sees no UDP), and HTTP/1.1 keep-alive requests from wrk to nginx between the
namespaces, and prints
medians, ratios to the no-agent baseline, the observers' CPU and memory, lost events
and an accuracy check of what the agent recorded against what the generator did.
tracepoint and sock_ops are the agent with `--core tracepoint` (tracepoints) and
`--core sock_ops` (cgroup v2 socket programs); sock_ops-http is the latter with http
added to its probe kinds (the request layer); hooks-<core> attaches empty programs to
exactly the hooks that core's agent attached: the floor any observer on those hooks
pays. Two extra passes measure inside single runs: BPF run statistics per program, and
a `perf record -a` profile of where the CPU went.

Run as root from the repository: `make bench` or
`.venv/bin/python -m benchmarks.agent_overhead [--seconds S] [--repeats N]`.
Traffic stays on loopback and a veth pair inside the benchmark's own tpb-*
namespaces; everything it starts is stopped and removed on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from types import FrameType

from benchmarks import bpfcost, cpuprofile, http_workload, procs, report, workloads
from benchmarks.build import build_loadgen
from benchmarks.netns import Namespaces, reap_stale
from benchmarks.observer_base import ObserverFailed
from benchmarks.observers import AGENTS, CORES, OBSERVERS, TCPLIFE, program_names
from benchmarks.overhead_tables import describe, print_tables
from benchmarks.results import BASELINE, Run
from traceprobe_agent.cgroups import cgroup2_mount

# Each floor after both cores, so it mirrors what its own core attached in this repeat.
VARIANTS = (BASELINE, *AGENTS, *(f"hooks-{core}" for core in CORES), "tcplife")
DEFAULT_WORKLOADS = ("loopback-churn", "netns-churn", "loopback-bulk", "netns-udp",
                     "netns-http")
START_TIMEOUT = 180.0
REPEATS = 5


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.agent_overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=6.0, help="per workload run (6)")
    p.add_argument("--repeats", type=int, default=REPEATS,
                   help=f"interleaved repeats ({REPEATS})")
    p.add_argument("--threads", type=int, default=4, help="churn client threads (4)")
    p.add_argument("--server-workers", type=int, default=4, help="churn server threads (4)")
    p.add_argument("--bulk-connections", type=int, default=1, help="bulk streams (1)")
    p.add_argument("--http-threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--http-connections", type=int, default=8,
                   help="wrk keep-alive connections, over all its threads (8)")
    p.add_argument("--no-pin", action="store_true",
                   help="let the scheduler place bulk sender and receiver (default: CPU 0 / 1)")
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                   help=f"comma-separated, of {','.join(workloads.NAMES)}")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--settle", type=float, default=1.5,
                   help="seconds an observer gets after the traffic before it is stopped")
    p.add_argument("--bpf-stats-seconds", type=float, default=4.0,
                   help="length of the extra per-program BPF cost pass (0: skip it)")
    p.add_argument("--profile-seconds", type=float, default=4.0,
                   help="length of the extra perf-profile pass (0: skip it)")
    p.add_argument("--no-install", action="store_true",
                   help="do not apt-get install bpfcc-tools, linux-perf, nginx-light or "
                        "wrk when missing")
    return p.parse_args(argv)


def ensure_tcplife(install: bool) -> str | None:
    """None when tcplife-bpfcc can run, else why not (its column then shows n/a)."""
    if os.access(TCPLIFE, os.X_OK):
        return None
    if not install:
        return "not installed and --no-install given"
    say("tcplife-bpfcc missing: apt-get update && apt-get install -y bpfcc-tools ...")
    if why := procs.apt_install("bpfcc-tools"):
        return f"not installed: {why}"
    return None if os.access(TCPLIFE, os.X_OK) else f"bpfcc-tools installed but no {TCPLIFE}"


def run_one(variant: str, workload: workloads.Workload, settings: workloads.Settings,
            binary: Path, repeat: int, settle: float, profile: Path | None = None) -> Run:
    """One workload under one variant; observer started before and stopped after;
    with `profile`, the traffic runs under perf record into that file."""
    run = Run(repeat, variant, workload.name)
    observer = OBSERVERS[variant]() if variant != BASELINE else None
    try:
        if observer is not None:
            observer.udp = workload.kind == "udp"
            observer.start(START_TIMEOUT)
            cpu0 = procs.cpu_seconds(observer.pid)
            bpf0 = procs.bpf_programs(observer.pid)
        time.sleep(0.5)  # the same quiet gap before every run, observer or not
        busy0, obs0 = procs.machine_busy(), procs.cpu_seconds(observer.pid) if observer else 0.0
        work0 = procs.machine_work()
        with cpuprofile.recording(profile) if profile else nullcontext():
            run.result = workloads.run(workload, settings, binary)
        run.machine_cpu, run.steal = (b - a for a, b in zip(work0, procs.machine_work(),
                                                             strict=True))
        busy, wall = (b - a for a, b in zip(busy0, procs.machine_busy(), strict=True))
        obs_cpu = procs.cpu_seconds(observer.pid) - obs0 if observer else 0.0
        others = busy - run.result.client_cpu - run.result.server_cpu - obs_cpu
        run.other_cpu = max(0.0, others / wall) if wall > 0 else None
        if observer is not None:
            run.rss, run.hwm = procs.memory_bytes(observer.pid)
            time.sleep(settle)  # the agent drains its last interval, tcplife its backlog
            run.cpu = procs.cpu_seconds(observer.pid) - cpu0
            bpf1 = procs.bpf_programs(observer.pid)
            names = program_names(sorted(bpf1))  # while the programs still exist
            run.tail_calls = bpfcost.tail_calls(observer.pid)
            run.bpf = {names[i]: (c - bpf0.get(i, (0, 0))[0], t - bpf0.get(i, (0, 0))[1])
                       for i, (c, t) in bpf1.items()}
            observer.before_stop()
            observer.stop()
            run.acc = observer.account(run.result)
        if profile:
            run.prof = cpuprofile.shares(profile, observer.pid if observer else None)
    except (ObserverFailed, RuntimeError, OSError, ValueError) as exc:
        run.error = f"{variant} run failed: {exc}".replace("\n", " ")
    finally:
        if observer is not None:
            observer.close()
    return run


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if os.geteuid() != 0:
        print("benchmarks.agent_overhead: run as root (BPF, network namespaces)", file=sys.stderr)
        return 2
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    variants = [v for v in VARIANTS if v in chosen]
    unknown = [n for n in names if n not in workloads.NAMES] + [
        v for v in chosen if v not in VARIANTS]
    if unknown or not names or not variants:
        print(f"choose workloads from {', '.join(workloads.NAMES)} and variants from "
              f"{', '.join(VARIANTS)} (got {args.workloads!r}, {args.variants!r})",
              file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    print("Agent overhead benchmark\n\nMachine\n" + report.machine_facts(), flush=True)
    if foreign := bpfcost.foreign_hooks(cgroup2_mount()):
        print(f"\n  NOTE: BPF programs on these hooks before the run (another agent or test?): "
              f"{', '.join(foreign)}; every variant pays them, the baseline too.", flush=True)
    binary = build_loadgen()
    fingerprint = report.agent_fingerprint()
    runs: list[Run] = []
    running = list(variants)
    if "tcplife" in variants and (why := ensure_tcplife(not args.no_install)):
        print(f"\n  NOTE: tcplife-bpfcc unavailable ({why}); its rows show n/a.", flush=True)
        running.remove("tcplife")
        runs += [Run(0, "tcplife", n, error=f"tcplife-bpfcc unavailable: {why}") for n in names]
    if "netns-http" in names and (why := http_workload.ensure_tools(not args.no_install)):
        print(f"\n  NOTE: nginx or wrk unavailable ({why}); netns-http rows show n/a.",
              flush=True)
        names_run = [n for n in names if n != "netns-http"]
        runs += [Run(0, v, "netns-http", error=f"nginx or wrk unavailable: {why}")
                 for v in variants]
    else:
        names_run = names
    settings = workloads.Settings(args.seconds, args.threads, args.server_workers,
                                  args.bulk_connections, not args.no_pin, args.http_threads,
                                  args.http_connections)
    total = len(names_run) * len(running) * args.repeats
    stale = reap_stale() + http_workload.reap_stale()
    say(f"{total} runs of {args.seconds:g}s (+ observer start-up), then the BPF cost and "
        f"profile passes; removed stale namespaces and nginx directories: "
        f"{stale or 'none'}")
    costs: list[Run] = []
    profiled: list[Run] = []
    perf_missing = (cpuprofile.ensure_perf(not args.no_install)
                    if args.profile_seconds > 0 else "--profile-seconds 0")
    if perf_missing:
        print(f"\n  NOTE: no CPU profile pass ({perf_missing}).", flush=True)
    measured = len(runs)
    try:
        with Namespaces() as ns:
            all_wl = workloads.all_workloads(ns)
            try:
                for name in names_run:  # unmeasured: first-run effects hit no variant
                    workloads.run(all_wl[name], replace(settings, seconds=2.0), binary)
                for repeat in range(args.repeats):
                    for name in names_run:
                        for v in running:
                            runs.append(run_one(v, all_wl[name], settings, binary, repeat,
                                                args.settle))
                            say(f"{len(runs) - measured}/{total} repeat {repeat + 1}: "
                                f"{describe(runs[-1])}")
                observers = [v for v in running if v != BASELINE]
                if args.bpf_stats_seconds > 0 and observers:
                    short = replace(settings, seconds=args.bpf_stats_seconds)
                    with bpfcost.stats_enabled() as enabled:
                        for name in names_run if enabled else []:
                            for v in observers:
                                costs.append(run_one(v, all_wl[name], short, binary, -1,
                                                     args.settle))
                                say(f"BPF cost pass: {describe(costs[-1])}")
                if args.profile_seconds > 0 and perf_missing is None:
                    short = replace(settings, seconds=args.profile_seconds)
                    with tempfile.TemporaryDirectory(prefix="tpb-perf-") as tmp:
                        for name in names_run:
                            for v in running:
                                data = Path(tmp) / f"{name}-{v}.data"
                                profiled.append(run_one(v, all_wl[name], short, binary, -2,
                                                        args.settle, profile=data))
                                data.unlink(missing_ok=True)
                                say(f"profile pass: {describe(profiled[-1])}")
            finally:
                procs.stop_all()
    except KeyboardInterrupt:
        procs.stop_all()
        print("\ninterrupted: processes stopped, tpb-* namespaces removed", file=sys.stderr)
        return 130
    print_tables(runs, costs, profiled, names, variants, settings)
    if foreign := bpfcost.foreign_hooks(cgroup2_mount()):
        print(f"\nWARNING: BPF programs on these hooks after the run (another agent or test?): "
              f"{', '.join(foreign)}; while they ran, every variant paid them.")
    if report.agent_fingerprint() != fingerprint:
        print(f"\nWARNING: the agent's sources changed during the run ({fingerprint} -> "
              f"{report.agent_fingerprint()}); each agent run compiles them anew, so these "
              "results mix versions.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
