"""The agent-overhead benchmark's output: a line per run while it goes, then every
table (per workload, Notes, Targets, BPF program cost, where the CPU went)."""

from __future__ import annotations

from benchmarks import bpfcost, cpuprofile, http_workload, report, targets, workloads
from benchmarks.results import Run


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
        if (q := run.unaccounted_requests()) is not None:
            extra += f", requests unaccounted cli/srv {q[0]}/{q[1]}"
    if run.cpu is not None and run.rss is not None:
        extra += f", obs CPU {run.cpu:.2f}s RSS {run.rss / 1e6:.0f} MB"
    other = f", other CPU {run.other_cpu:.0%}" if run.other_cpu is not None else ""
    return f"{head} {rate}, failed {r.failed}{other}{extra}"


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
          f"udp added to their probes; http: wrk, {settings.http_threads} threads, "
          f"{settings.http_connections} keep-alive connections, GET of a "
          f"{http_workload.BODY_BYTES} B file from nginx (a worker per CPU, reuseport, no "
          "access log), for whole seconds. Namespaces keep no TIME_WAIT sockets "
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
