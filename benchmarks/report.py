"""The printed tables: machine facts, per-workload results (every variant side by side),
where the CPU went (the targets: targets.py)."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
from collections.abc import Sequence

from benchmarks.cpuprofile import Shares
from benchmarks.observers import REPO
from benchmarks.results import BASELINE, Run, Summary, summarise
from benchmarks.workloads import UNITS

TARGET_CONN_RATIO, TARGET_BULK_RATIO, TARGET_RSS_MB = 0.97, 0.99, 150.0
TARGET_OVER_FLOOR = 0.010  # prof-est a core's programs may lose beyond its own floor
TARGET_HTTP_RATIO = 0.95  # the request layer on (sock_ops-http) vs no agent, on HTTP
TARGET_HTTP_ON_OFF = 0.98  # sock_ops-http vs sock_ops where no request is made
MB = 1e6
NA = "n/a"
LEGEND = """
How to read the tables
  variants baseline: no observer. tracepoint, sock_ops: the traceprobe agent with --core
           tracepoint (tracepoints, raw tracepoints) or --core sock_ops (cgroup v2 socket
           programs linked at the cgroup2 root), each with its DNS tap (cgroup skb
           ingress). sock_ops-http: the sock_ops agent with http added to its probe kinds
           (HTTP/1.x requests parsed in the same cgroup skb programs and their tail calls;
           its floor is hooks-sock_ops). hooks-tracepoint, hooks-sock_ops: empty programs
           on exactly the hooks that core's agent attached (its ready line), the floor of
           any observer there (an empty sock_ops program turns on no callbacks, so that
           floor leaves out the ones its core asks for). tcplife: tcplife-bpfcc.
  medians over the repeats; [min - max] across them.
  other CPU  share of the machine's CPU time busy with neither the generator nor the
           observer during the traffic (other tenants, kworkers, ksoftirqd): noise gauge.
  ratio    rate / the baseline run of the same repeat (runs are interleaved, so slow drift
           in the machine's other load cancels); the median of those per-repeat ratios.
           The table's verdict (>= target) is on this figure; Targets gives it and the
           work-est one.
  med/med  median rate / the baseline's median rate (unpaired; steadier when run-to-run
           noise is fast rather than a drift).
  cpu-est  the ratio estimated from CPU cost instead of wall-clock rate: baseline's median
           CPU per connection (client + server processes) / this variant's (client + server
           + observer). At saturation rate ~ CPU / cost; misses softirq work done in
           ksoftirqd or idle context. Estimates that disagree mean noise, not signal.
  work-est the same from all the machine's work (/proc/stat user + nice + system + irq +
           softirq on every CPU, steal excluded) per connection or GiB: softirq wherever
           it ran and the observer included, time the hypervisor stole left out.
  steal    CPU time the hypervisor took during the traffic, as a share of the work done.
  gen CPU  the generator's client + server CPU (utime + stime, softirq included when it
           ran in their context) per connection or GiB: the observer's in-kernel cost
           lands here.
  prof-est 1 - the observer's share of the CPU samples in a profiled run (table "Where
           the CPU went"): inside one run, so machine drift between runs cancels. The
           headline figure.
  over floor  the core's own floor's prof-est - the core's: what its programs add beyond
           reaching their hooks, in points of the rate (Targets: <= 1.0).
  obs      the observer process (agent, hooks-only loader or tcplife): CPU from
           /proc/PID/stat over the traffic and settling time; RSS = VmRSS at the end of
           the traffic; peak = max VmHWM (includes the BCC compile).
  drops    agent: kernel drop counters (conn_map_full, edge_map_full, request_map_full);
           tcplife: samples its perf buffer lost ("Possibly lost N samples").
  recorded client-side connections the observer saw for the generator's pid (agent:
           opened + refused + timeouts) / attempted by the generator (completed + failed;
           http: the connections nginx accepted, wrk's address check included, + wrk's
           connect errors).
  unaccounted  generator's count minus observer's, summed over repeats; client side as
           above, server side: connections accepted vs recorded as opened (bulk: bytes sent
           vs bytesSent, bytes received vs bytesReceived).
  requests http: requests the agent counted answered (its records' requests), client
           and server side / wrk's count and nginx's (stub_status). wrk leaves out the
           few in flight when it stops, nginx counts them: a client count between the
           two misses nothing; the server's must be nginx's. n/a: no request layer."""


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


def agent_fingerprint() -> str:
    """Hash of the agent's sources (bpf/*.[ch], node_agent/**/*.py): each run compiles
    them anew."""
    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("bpf/*.[ch]"), *REPO.glob("node_agent/**/*.py")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


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
        ("load avg", f"{load} (1, 5, 15 min) at start"),
        ("traceprobe", f"{git('rev-parse', '--short', 'HEAD')}{dirty}; agent sources "
                       f"{agent_fingerprint()} (sha256 of bpf/*.[ch], node_agent/**/*.py)"),
    ]
    return "\n".join(f"  {k:<11} {v}" for k, v in facts)


def _cell_unaccounted(s: Summary) -> str:
    u = s.unaccounted()
    return NA if u is None else f"{u[0]:,} / {u[1]:,}"


def workload_block(runs: list[Run], workload: str, variants: list[str],
                   kind: str) -> tuple[str, dict[str, Summary]]:
    """One table per workload, a row per variant; returns it and each variant's summary
    (the targets take the cores' and their floors')."""
    churn = kind != "bulk"  # counted in exchanges: connections, or datagrams answered
    unit = UNITS[kind]
    # udp has no target of its own: the churn target's column, for comparison.
    target = {"bulk": TARGET_BULK_RATIO, "http": TARGET_HTTP_RATIO}.get(kind,
                                                                       TARGET_CONN_RATIO)
    header = ["variant", f"{unit}/s" if churn else "MB/s", "other CPU", "ratio",
              "[min - max]", f">={target}", "med/med", "cpu-est", "work-est", "steal",
              f"gen CPU us/{unit}" if churn else "gen CPU s/GiB",
              "obs CPU s/100k" if churn else "obs CPU s/GiB",
              f"RSS MB<={TARGET_RSS_MB:.0f}", "peak MB",
              "drops/lost", "recorded/expected" if churn else "bytes counted/sent",
              "unaccounted cli/srv" + ("" if churn else " bytes") + " (=0)"]
    if kind == "http":  # requests are not connections: counted beside them
        header += ["requests cli/srv", "wrk/nginx", "unaccounted req (=0)"]
    scale = 1.0 if churn else 1 / MB
    rows, summaries = [], {}
    for v in variants:
        s = summaries[v] = summarise(runs, workload, v)
        if not s.rates:
            rows.append([v, NA, *[""] * (len(header) - 3), "see Notes" if s.errors else NA])
            continue
        obs = v != BASELINE
        gen = s.workload_cpu_per_unit()
        cpu = s.obs_cpu_per_unit()
        rows.append([
            v, num(s.rate * scale if s.rate is not None else None),
            num(100 * o if (o := s.other_cpu()) is not None else None, ".0f") + "%",
            num(s.ratio, ".3f"),
            f"[{min(s.ratios):.2f} - {max(s.ratios):.2f}]" if s.ratios and obs else "",
            verdict(s.ratio, target) if obs else "",
            num(s.rate_of_medians, ".3f") if obs else "", num(s.cpu_ratio, ".3f") if obs else "",
            num(s.machine_ratio, ".3f") if obs else "",
            num(100 * st if (st := s.steal_share()) is not None else None, ".0f") + "%",
            num(gen * 1e6 if churn and gen is not None else gen, ".1f" if churn else ".3f"),
            num(cpu * 1e5 if churn and cpu is not None else cpu, ".2f" if churn else ".3f")
            if obs else "",
            num(to_mb(s.rss()), ".1f") if obs else "",
            num(to_mb(s.peak()), ".1f") if obs else "",
            num(s.drops()) if obs else "",
            _recorded(s, churn) if obs else "",
            _cell_unaccounted(s) if obs else "",
            *(_request_cells(s, obs) if kind == "http" else []),
        ])
    return table(header, rows), summaries


def _request_cells(s: Summary, observer: bool) -> list[str]:
    """Requests the observer counted (n/a: it counts none), beside wrk's and nginx's."""
    counted = s.requests()
    truth = [(r.result.completed, r.result.served or 0) for r in s.ok_runs() if r.result]
    ours = "/".join(f"{sum(t[i] for t in truth):,}" for i in (0, 1)) if truth else NA
    if not observer or counted is None:
        return [NA if observer else "", ours, NA if observer else ""]
    u = s.unaccounted_requests()
    return [f"{counted[0]:,}/{counted[1]:,}", ours, NA if u is None else f"{u[0]:,} / {u[1]:,}"]


def _recorded(s: Summary, churn: bool) -> str:
    accs = [r.acc for r in s.ok_runs()]
    counts = [a.client_conns if churn else a.client_bytes for a in accs if a is not None]
    known = [c for c in counts if c is not None]
    if not known or len(known) != len(accs) or not s.expected():
        return NA
    return f"{sum(known):,}/{s.expected():,}" if churn else f"{sum(known) / s.expected():.6f}"


def _profile(runs: list[Run], workload: str, variant: str) -> Shares | None:
    """The variant's profiled run of the workload, if it has samples."""
    return next((r.prof for r in runs if r.workload == workload and r.variant == variant
                 and r.prof and r.prof.samples), None)


def prof_est(runs: list[Run], workload: str, variant: str) -> float | None:
    """1 - the variant's share of the samples beyond the baseline's (profile pass)."""
    mine, base = _profile(runs, workload, variant), _profile(runs, workload, BASELINE)
    if mine is None:
        return None
    return 1 - max(0.0, mine.kernel - (base.kernel if base else 0.0)) - mine.process


def profile_block(runs: list[Run]) -> str:
    """Per variant and workload: the observer's share of the CPU samples, in the kernel
    (BPF programs and the hooks calling them) and in its process, and 1 - the share
    beyond what the baseline run's samples already show (other tenants' BPF)."""
    workloads = list(dict.fromkeys(r.workload for r in runs))
    header = ["variant"]
    for w in workloads:
        header += [f"{w} in-kernel", "process", "prof-est"]
    rows = []
    for variant in dict.fromkeys(r.variant for r in runs):
        row = [variant]
        for w in workloads:
            prof = _profile(runs, w, variant)
            if prof is None:
                failed = any(r.error for r in runs if r.variant == variant and r.workload == w)
                row += [NA, "", "failed" if failed else ""]
                continue
            row += [f"{100 * prof.kernel:.2f}%", f"{100 * prof.process:.2f}%",
                    num(prof_est(runs, w, variant), ".3f") if variant != BASELINE else ""]
        rows.append(row)
    samples = sorted(r.prof.samples for r in runs if r.prof)
    idle = max((r.prof.idle / (r.prof.idle + r.prof.samples) for r in runs
                if r.prof and r.prof.samples), default=0.0)
    note = (f"  ({samples[0]:,}-{samples[-1]:,} busy samples per run, the shares' base; "
            f"idle CPU left out, at most {idle:.0%} of a run)") if samples else ""
    failures = [f"  {r.workload} / {r.variant}: {r.error}" for r in runs if r.error]
    return "\n".join([table(header, rows), *([note] if note else []), *failures])


def anomalies_block(runs: list[Run], workloads: list[str], variants: list[str]) -> str:
    lines = []
    for w in workloads:
        for v in variants:
            s = summarise(runs, w, v)
            if s.anomalies():
                found = ", ".join(f"{k} {n:,}" for k, n in sorted(s.anomalies().items()))
                lines.append(f"  {w} / {v}: {found} (summed over runs; counters, not losses)")
            lines += [f"  {w} / {v}: {e}" for e in dict.fromkeys(s.errors)]
            if s.failed():
                lines.append(f"  {w} / {v}: generator failures {s.failed():,}: {s.error_kinds()}")
    return "\n".join(lines)


def to_mb(x: float | None) -> float | None:
    return None if x is None else x / MB

