"""Agent overhead: what the traceprobe agent costs the traffic it watches, with each of
its connection cores.

Runs, interleaved in one invocation (per repeat and workload: baseline, tracepoint,
sock_ops, hooks-tracepoint, hooks-sock_ops, tcplife), a connection-churn workload on
loopback and between two network namespaces, a bulk-transfer workload, and UDP
request/response datagrams between the namespaces (the agent with its udp kind on;
tcplife sees no UDP), and prints
medians, ratios to the no-agent baseline, the observers' CPU and memory, lost events
and an accuracy check of what the agent recorded against what the generator did.
tracepoint and sock_ops are the agent with `--core tracepoint` (tracepoints) and
`--core sock_ops` (cgroup v2 socket programs); hooks-<core> attaches empty programs to
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

from benchmarks import bpfcost, cpuprofile, procs, report, targets, workloads
from benchmarks.build import build_loadgen
from benchmarks.netns import Namespaces, reap_stale
from benchmarks.observers import CORES, OBSERVERS, TCPLIFE, ObserverFailed, program_names
from benchmarks.results import BASELINE, Run
from traceprobe_agent.cgroups import cgroup2_mount

# Each floor after both cores, so it mirrors what its own core attached in this repeat.
VARIANTS = (BASELINE, *CORES, *(f"hooks-{core}" for core in CORES), "tcplife")
DEFAULT_WORKLOADS = ("loopback-churn", "netns-churn", "loopback-bulk", "netns-udp")
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
    p.add_argument("--no-pin", action="store_true",
                   help="let the scheduler place bulk sender and receiver (default: CPU 0 / 1)")
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                   help="comma-separated, of loopback-churn,netns-churn,loopback-bulk,netns-bulk")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--settle", type=float, default=1.5,
                   help="seconds an observer gets after the traffic before it is stopped")
    p.add_argument("--bpf-stats-seconds", type=float, default=4.0,
                   help="length of the extra per-program BPF cost pass (0: skip it)")
    p.add_argument("--profile-seconds", type=float, default=4.0,
                   help="length of the extra perf-profile pass (0: skip it)")
    p.add_argument("--no-install", action="store_true",
                   help="do not apt-get install bpfcc-tools or linux-perf when missing")
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


def describe(run: Run) -> str:
    head = f"{run.workload:<15} {run.variant:<16}"
    if not run.ok or run.result is None:
        return f"{head} FAILED: {run.error}"
    r = run.result
    rate = (f"{r.rate:,.0f} {workloads.UNITS[r.workload.kind]}/s" if r.workload.exchanges
            else f"{r.rate / 1e6:,.0f} MB/s")
    extra = ""
    if run.acc is not None and (u := run.unaccounted()) is not None:
        extra = f", unaccounted cli/srv {u[0]}/{u[1]}, drops {run.drops()}"
    if run.cpu is not None and run.rss is not None:
        extra += f", obs CPU {run.cpu:.2f}s RSS {run.rss / 1e6:.0f} MB"
    other = f", other CPU {run.other_cpu:.0%}" if run.other_cpu is not None else ""
    return f"{head} {rate}, failed {r.failed}{other}{extra}"


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
    settings = workloads.Settings(args.seconds, args.threads, args.server_workers,
                                  args.bulk_connections, not args.no_pin)
    total = len(names) * len(running) * args.repeats
    say(f"{total} runs of {args.seconds:g}s (+ observer start-up), then the BPF cost and "
        f"profile passes; "
        f"removed stale namespaces: {reap_stale() or 'none'}")
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
                for name in names:  # unmeasured: first-run effects hit no variant
                    workloads.run(all_wl[name], replace(settings, seconds=2.0), binary)
                for repeat in range(args.repeats):
                    for name in names:
                        for v in running:
                            runs.append(run_one(v, all_wl[name], settings, binary, repeat,
                                                args.settle))
                            say(f"{len(runs) - measured}/{total} repeat {repeat + 1}: "
                                f"{describe(runs[-1])}")
                observers = [v for v in running if v != BASELINE]
                if args.bpf_stats_seconds > 0 and observers:
                    short = replace(settings, seconds=args.bpf_stats_seconds)
                    with bpfcost.stats_enabled() as enabled:
                        for name in names if enabled else []:
                            for v in observers:
                                costs.append(run_one(v, all_wl[name], short, binary, -1,
                                                     args.settle))
                                say(f"BPF cost pass: {describe(costs[-1])}")
                if args.profile_seconds > 0 and perf_missing is None:
                    short = replace(settings, seconds=args.profile_seconds)
                    with tempfile.TemporaryDirectory(prefix="tpb-perf-") as tmp:
                        for name in names:
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


def print_tables(runs: list[Run], costs: list[Run], profiled: list[Run], names: list[str],
                 variants: list[str], settings: workloads.Settings) -> None:
    print(f"\nSettings: {settings.seconds:g} s per run, {len({r.repeat for r in runs if r.ok})} "
          f"interleaved repeats ({', '.join(variants)} per repeat and workload); "
          f"churn: {settings.threads} client threads, {settings.server_workers} server "
          f"threads, {workloads.REQUEST_BYTES} B request, {workloads.RESPONSE_BYTES} B "
          f"response, server closes first; bulk: {settings.bulk_connections} stream(s) of "
          f"{workloads.CHUNK_BYTES // 1024} KiB writes"
          f"{', sender on CPU 0, receiver on CPU 1' if settings.pin_bulk else ''}; udp: "
          f"{settings.threads} client sockets, {settings.server_workers} server sockets "
          "(SO_REUSEPORT), one datagram each way per exchange, the same sizes, agents with "
          "udp added to their probes. Namespaces keep no TIME_WAIT sockets "
          "(tcp_max_tw_buckets=0), so runs do not inherit each other's.")
    print(report.LEGEND)
    summaries = {}
    for name in names:
        text, summaries[name] = report.workload_block(runs, name, variants,
                                                      workloads.kind_of(name))
        print(f"\n{name}\n{text}")
    notes = report.anomalies_block(runs, names, variants)
    if notes:
        print(f"\nNotes\n{notes}")
    print(f"\nTargets\n{targets.targets_block(summaries, profiled)}")
    if costs:
        print("\nBPF program cost (separate run per workload with kernel.bpf_stats_enabled=1; "
              "not part of the ratios above)\n" + bpfcost.render(costs))
    if profiled:
        print(f"\nWhere the CPU went (separate run per workload and variant under perf record "
              f"-a -g at {cpuprofile.FREQUENCY_HZ} Hz; not part of the ratios above)\n"
              + report.profile_block(profiled))


if __name__ == "__main__":
    sys.exit(main())
