"""Every benchmark in one command: `make bench`, or
`.venv/bin/python -m benchmarks.all [--quick] [--only NAMES] [--write-docs]`.

Runs, one after the other, each as its own process (each cleans up after itself,
also on Ctrl-C): agent overhead (no agent vs the agent's tracepoint and sock_ops
connection cores, and sock_ops with its HTTP request layer, vs each core's hooks-only
floor vs tcplife-bpfcc, BPF cost per connection, where the CPU went, agent CPU and
RSS), service-map merge scale, apply-to-Ready of a probe, OTLP export throughput.
Prints a machine header and each benchmark's tables as they come; --write-docs also
writes all of it to docs/benchmarks.md (with --only: replaces just the sections of the
benchmarks run, each under this run's machine header, and keeps the others). --quick
passes each benchmark its short settings (a smoke run, about 13 minutes in all).
Run as root (BPF, network namespaces); without root the two that need it are skipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from benchmarks import docs_merge, procs
from benchmarks.report import machine_facts, table

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"
_signalled: list[int] = []  # SIGTERM/SIGHUP received (Ctrl-C reaches the children itself)


@dataclass(frozen=True)
class Bench:
    name: str
    title: str
    quick: tuple[str, ...]
    root: bool


BENCHES = (
    Bench("agent_overhead", "Agent overhead: connection churn, bulk transfer, UDP and HTTP, "
          "no agent vs the tracepoint and sock_ops cores (and sock_ops with its request "
          "layer) vs each core's hooks-only floor vs tcplife-bpfcc; BPF cost per "
          "connection; where the CPU went; agent CPU and RSS",
          ("--seconds", "2", "--repeats", "2", "--bpf-stats-seconds", "2",
           "--profile-seconds", "2"), True),
    Bench("map_scale", "Service-map merge scale", ("--quick",), False),
    Bench("apply_to_ready", "Probe apply to Ready (BCC compile included)", ("--quick",), True),
    Bench("export_throughput", "OTLP export throughput", ("--quick",), False),
)
NAMES = tuple(b.name for b in BENCHES)

INTRO = """\
# Benchmarks

Figures from one run of `make bench` (`python -m benchmarks.all --write-docs`; how
each benchmark works: [benchmarks/README.md](../benchmarks/README.md)); a section
recorded later on its own (`--only NAME --write-docs`) carries that run's machine
header. Every figure stands beside a baseline measured in the same run on the same
machine, and the ratios are what to read: a ratio compares a figure with its
baseline (as each table's legend says, per repeat where runs are interleaved), so
slow drift of the machine cancels out; absolute rates do not carry over to other
hardware. Figures are medians over repeats, with [min - max] where shown, on a
shared 2-core VM whose speed varies by 10-20% from one run to the next: treat
differences smaller than that as noise. Nothing here is asserted by a test; timing
is measured, never checked.
"""


@dataclass
class Result:
    bench: Bench
    argv: list[str]
    output: str = ""
    code: int | None = None  # None: skipped
    seconds: float = 0.0
    note: str = ""


def say(msg: str) -> None:
    print(f"[bench-all] {msg}", file=sys.stderr, flush=True)


def os_release() -> str:
    fields: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            fields[key] = value.strip('"')
    except OSError:
        pass
    debian = Path("/etc/debian_version")
    version = f", debian_version {debian.read_text().strip()}" if debian.exists() else ""
    return f"{fields.get('PRETTY_NAME', platform.platform())}{version}"


def header(argv: list[str]) -> str:
    facts = machine_facts() + (f"\n  {'os':<11} {os_release()}\n  {'python':<11} "
                               f"{platform.python_version()}")
    return (f"traceprobe benchmarks\n\nMachine\n{facts}\n\n"
            f"Command: python -m benchmarks.all {' '.join(argv)}".rstrip())


def plan(quick: bool, only: list[str], repeats: int | None = None) -> list[Result]:
    """`repeats`: the agent overhead's (its default otherwise)."""
    return [Result(b, [*(b.quick if quick else ()), *(
        ("--repeats", str(repeats)) if repeats and b.name == "agent_overhead" else ())])
        for b in BENCHES if b.name in only]


def summary(results: list[Result]) -> str:
    rows = [[r.bench.name, "skipped" if r.code is None else str(r.code),
             f"{r.seconds / 60:.1f}", r.note or f"python -m benchmarks.{r.bench.name} "
             + " ".join(r.argv)] for r in results]
    return table(["benchmark", "exit", "minutes", "command"], rows)


def render_docs(head: str, results: list[Result]) -> str:
    parts = [INTRO, "```text", head, "```", ""]
    for r in results:
        command = " ".join(["python -m benchmarks." + r.bench.name, *r.argv])
        status = ("skipped: " + r.note if r.code is None else
                  f"`{command}`, {r.seconds / 60:.1f} min"
                  + ("" if r.code == 0 else f", exited {r.code}"))
        parts += [f"## {r.bench.title}", "", status, ""]
        if r.output.strip():
            parts += ["```text", r.output.strip("\n"), "```", ""]
    parts += ["## Summary", "", "```text", summary(results), "```", ""]
    return "\n".join(parts)


def run_one(result: Result) -> None:
    """The benchmark as a child process; its stdout echoed and kept, stderr passed on."""
    started = time.monotonic()
    child = procs.spawn([sys.executable, "-m", f"benchmarks.{result.bench.name}",
                         *result.argv], stdout=subprocess.PIPE, text=True, cwd=REPO,
                        bufsize=1)
    assert child.stdout is not None
    lines = []
    try:
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
        result.code = child.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the child too (same process group); a SIGTERM is ours to pass on.
        if _signalled and child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(180)  # it removes what it made, then we leave
        except subprocess.TimeoutExpired:
            procs.stop(child)
        raise
    finally:
        result.output = "".join(lines)
        result.seconds = time.monotonic() - started


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _signalled.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short settings for every benchmark")
    p.add_argument("--only", default=",".join(NAMES),
                   help=f"comma-separated subset of {','.join(NAMES)}")
    p.add_argument("--repeats", type=int, default=None,
                   help="the agent overhead's interleaved repeats (default: its own, 5)")
    p.add_argument("--write-docs", action="store_true",
                   help=f"write {DOCS.relative_to(REPO)} (with --only: just their sections)")
    args = p.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    if not only or set(only) - set(NAMES):
        p.error(f"--only takes some of {', '.join(NAMES)}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    head = header(argv)
    print(head, flush=True)
    if args.repeats is not None and args.repeats < 1:
        p.error(f"--repeats must be 1 or more, not {args.repeats}")
    results = plan(args.quick, only, args.repeats)
    try:
        for r in results:
            if r.bench.root and os.geteuid() != 0:
                r.note = "needs root (BPF, network namespaces)"
                print(f"\n== {r.bench.title}: skipped, {r.note}", flush=True)
                continue
            print(f"\n== {r.bench.title}\n", flush=True)
            say(f"running python -m benchmarks.{r.bench.name} {' '.join(r.argv)}")
            run_one(r)
    except KeyboardInterrupt:
        procs.stop_all()
        print("\ninterrupted: the running benchmark cleaned up; docs not written",
              file=sys.stderr)
        return 130
    print(f"\n== Summary\n\n{summary(results)}", flush=True)
    if args.write_docs:
        write_docs(head, results)
    return 0 if all(r.code in (0, None) for r in results) else 1


def write_docs(head: str, results: list[Result]) -> None:
    """The whole page after a full run; after --only, just the sections that ran."""
    page = render_docs(head, results)
    ran = [r.bench.name for r in results]
    if set(ran) != set(NAMES) and DOCS.exists():
        page = docs_merge.merge(DOCS.read_text(), page, head, ran,
                                {b.title: b.name for b in BENCHES})
    DOCS.write_text(page)
    say(f"wrote {DOCS.relative_to(REPO)}"
        + ("" if set(ran) == set(NAMES) else f" (sections of {', '.join(ran)})"))


if __name__ == "__main__":
    sys.exit(main())
