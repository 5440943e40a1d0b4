"""Apply to Ready: from `kubectl apply` of a TraceProbe to its Ready=True.

A real kube-apiserver + etcd, the CRDs and RBAC, the real operator (as its
ServiceAccount) and one real cluster-mode node agent (BCC, as its ServiceAccount),
all from the test harness. Per repeat, interleaved:

  configmap  baseline: `kubectl apply` of a ConfigMap until a GET returns it (the
             API round trip, kubectl's own start-up included, as in every row)
  cold       a probe whose limits differ from what the agent runs: it compiles and
             loads a new BPF program (swapped in beside an anchor probe's)
  warm       a probe asking exactly what the anchor probe already has the agent run:
             no compile, only watch -> NodeReport -> operator status

Timed from starting kubectl to: the probe's entry in the node's NodeReport saying
Attached at the probe's generation (the agent's part), and the probe's Ready=True
at that generation (the operator's status timer adds up to its refresh period).
The agent's compile time is read from its /metrics (traceprobe_agent_compile_seconds)
and its log counts the compiles. Run as root:
`.venv/bin/python -m benchmarks.apply_to_ready [--repeats N] [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from types import FrameType
from typing import Any

from benchmarks import procs as bench_procs
from benchmarks.report import table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the test world's parts

from harness.controlplane import ControlPlane  # noqa: E402
from harness.install import NAMESPACE, ensure_node, install  # noqa: E402
from harness.procs import ManagedProcess, free_port, wait_for_port  # noqa: E402
from harness.waiting import wait_until  # noqa: E402
from harness.world import GROUP, VERSION, OperatorWorld  # noqa: E402
from traceprobe_api.resources import PROBE_PLURALS  # noqa: E402

NODE = "bench-node-1"
PROBE_NS = "bench"
SELECTOR = "{traceprobe-bench: node}"
ANCHOR_LIMIT = 65536
TIMEOUT = 240.0
POLL = 0.05
_LOADED = re.compile(r"traceprobe\.agent: loaded .* in ([0-9.]+)s")


def say(msg: str) -> None:
    print(f"[apply-bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class Trial:
    mode: str  # configmap, cold, warm
    kubectl: float  # the kubectl process, start to exit
    attached: float | None = None  # apply -> NodeReport says Attached at this generation
    ready: float | None = None  # apply -> Ready=True (configmap: readable)
    compiles: int = 0  # programs the agent loaded meanwhile
    compile_s: float | None = None  # the agent's traceprobe_agent_compile_seconds
    agent_cpu: float = 0.0  # agent CPU seconds from apply to Ready


class Bench:
    def __init__(self, work: Path) -> None:
        self.cp = ControlPlane(work / "controlplane")
        self.work = work
        self.world: OperatorWorld | None = None
        self.agent: ManagedProcess | None = None
        self.metrics_port = 0
        self.footer = ""

    def start(self) -> None:
        say("starting etcd + kube-apiserver, CRDs and RBAC ...")
        self.cp.start()
        install(self.cp)
        ensure_node(self.cp, NODE, {"kubernetes.io/os": "linux", "traceprobe-bench": "node"})
        self.cp.kubectl("create", "namespace", PROBE_NS, check=False)
        self.world = OperatorWorld(self.cp, self.work)
        self.world.start_operator(detach_timeout=60)
        kubeconfig = self.cp.serviceaccount_kubeconfig(NAMESPACE, "traceprobe-agent")
        self.metrics_port = free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        self.agent = ManagedProcess("agent", [
            sys.executable, "-m", "traceprobe_agent", "--node-name", NODE, "--interval", "1",
            "--metrics-port", str(self.metrics_port),
            "--cgroup-root", "/traceprobe-bench/none"],  # report no records: no output
            self.work / "agent.log", env=env, cwd=REPO)
        wait_for_port(self.metrics_port, 60, self.agent.popen)
        say(f"operator and agent running (agent metrics on :{self.metrics_port})")

    def stop(self) -> None:
        for part in (self.agent, self.world, self.cp):
            if part is not None:
                try:
                    part.stop()
                except Exception as exc:  # keep stopping the rest
                    say(f"stopping {part} failed: {exc}")

    # --- reading the world ------------------------------------------------
    def metric(self, name: str) -> float | None:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def compiles(self) -> int:
        assert self.agent is not None
        return len(_LOADED.findall(self.agent.log.read_text(errors="replace")))

    def probe(self, name: str) -> dict[str, Any] | None:
        assert self.world is not None
        return self.world.probe(name, PROBE_NS)  # type: ignore[no-any-return]

    def entry(self, name: str) -> dict[str, Any]:
        assert self.world is not None
        report = self.world.node_report(NODE) or {}
        return next((e for e in (report.get("status") or {}).get("probes") or []
                     if e["probe"]["name"] == name), {})

    def _ready(self, name: str) -> tuple[bool, int]:
        obj = self.probe(name) or {}
        generation = int(obj.get("metadata", {}).get("generation") or 0)
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    and int(c.get("observedGeneration") or generation) == generation
                    for c in (obj.get("status") or {}).get("conditions") or [])
        return ready, generation

    # --- trials -----------------------------------------------------------
    def _apply(self, manifest: str) -> tuple[float, float]:
        started = time.monotonic()
        self.cp.kubectl("apply", "-f", "-", input_text=manifest)
        return started, time.monotonic() - started

    def configmap(self, i: int) -> Trial:
        name = f"bench-cm-{i}"
        started, took = self._apply(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {PROBE_NS}}}"
            f"\ndata: {{repeat: '{i}'}}\n")
        core = self.world.core if self.world else None
        assert core is not None
        _poll(lambda: core.read_namespaced_config_map(name, PROBE_NS), "ConfigMap readable")
        trial = Trial("configmap", took, ready=time.monotonic() - started)
        core.delete_namespaced_config_map(name, PROBE_NS)
        return trial

    def probe_trial(self, mode: str, name: str, limit: int) -> Trial:
        assert self.agent is not None
        compiles0, cpu0 = self.compiles(), bench_procs.cpu_seconds(self.agent.pid)
        started, took = self._apply(
            f"apiVersion: {GROUP}/{VERSION}\nkind: TraceProbe\nmetadata: {{name: {name}, "
            f"namespace: {PROBE_NS}}}\nspec: {{nodeSelector: {SELECTOR}, "
            f"limits: {{maxConnections: {limit}}}}}\n")
        trial = Trial(mode, took)
        deadline = started + TIMEOUT
        while trial.ready is None:
            if time.monotonic() > deadline or not self.agent.alive():
                raise RuntimeError(f"{mode} probe {name} not Ready within {TIMEOUT:.0f}s; "
                                   f"agent log:\n{self.agent.log_tail(15)}")
            ready, generation = self._ready(name)
            now = time.monotonic() - started
            e = self.entry(name)
            if trial.attached is None and e.get("state") == "Attached" and \
                    int(e["probe"].get("generation") or 0) == generation:
                trial.attached = now
            if ready:
                trial.ready = now
                trial.attached = trial.attached if trial.attached is not None else now
            else:
                time.sleep(POLL)
        trial.agent_cpu = bench_procs.cpu_seconds(self.agent.pid) - cpu0
        trial.compiles = self.compiles() - compiles0
        trial.compile_s = self.metric("traceprobe_agent_compile_seconds") \
            if trial.compiles else None
        return trial

    def delete_probe(self, name: str, compiles_after: int | None) -> None:
        """Delete and wait until the agent dropped it (and reloaded, when expected)."""
        assert self.world is not None
        self.world.custom.delete_namespaced_custom_object(GROUP, VERSION, PROBE_NS,
                                                          PROBE_PLURALS["TraceProbe"], name)
        _poll(lambda: self.probe(name) is None and not self.entry(name), f"{name} deleted")
        if compiles_after is not None:
            _poll(lambda: self.compiles() >= compiles_after, "the agent's reload")
            _poll(lambda: self.entry("anchor").get("state") == "Attached", "anchor attached")


def _poll(check: Callable[[], Any], what: str) -> Any:
    return wait_until(check, timeout=TIMEOUT, what=what, interval=POLL)


def run(bench: Bench, repeats: int) -> list[Trial]:
    say("anchor probe (the agent's standing program) ...")
    first = bench.probe_trial("first", "anchor", ANCHOR_LIMIT)
    trials = [first]
    say(f"first probe on the node: Ready in {first.ready:.1f}s, compile {first.compile_s}")
    for i in range(repeats):
        trials.append(bench.configmap(i))
        # A limit the agent has not run yet: union changes -> compile a new program.
        limit = ANCHOR_LIMIT + 1024 * (i + 1)
        trials.append(bench.probe_trial("cold", f"cold-{i}", limit))
        bench.delete_probe(f"cold-{i}", bench.compiles() + 1)  # back to the anchor's
        trials.append(bench.probe_trial("warm", f"warm-{i}", ANCHOR_LIMIT))
        bench.delete_probe(f"warm-{i}", None)
        say(f"repeat {i + 1}/{repeats}: " + ", ".join(
            f"{t.mode} {t.ready:.2f}s" for t in trials[-3:] if t.ready is not None))
    rss, peak = (bench.metric(f"process_resident_memory{m}_bytes") for m in ("", "_peak"))
    bench.footer = (f"  agent after {bench.compiles()} compiles: RSS {(rss or 0) / 1e6:.0f} MB, "
                    f"peak {(peak or 0) / 1e6:.0f} MB (its /metrics)")
    return trials


def _med(values: list[float | None], fmt: str = "{:.2f}") -> str:
    got = [v for v in values if v is not None]
    return fmt.format(median(got)) if got else "n/a"


def _span(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    return f"[{min(got):.2f} - {max(got):.2f}]" if got else ""


def render(trials: list[Trial]) -> str:
    base = {i: t.ready for i, t in enumerate(x for x in trials if x.mode == "configmap")}
    rows = []
    for mode, label in (("configmap", "ConfigMap readable (baseline)"),
                        ("first", "first probe on the node (compile)"),
                        ("cold", "cold: new limits, compile"),
                        ("warm", "warm: same config as running")):
        ts = [t for t in trials if t.mode == mode]
        if not ts:
            continue
        ratios = [t.ready / b for i, t in enumerate(ts)
                  if t.ready is not None and (b := base.get(i))]
        if mode == "first" and base:
            ratios = [t.ready / median(b for b in base.values() if b)
                      for t in ts if t.ready is not None]
        rest = [None if t.ready is None or t.attached is None else t.ready - t.attached
                for t in ts]
        rows.append([
            label, str(len(ts)), _med([t.kubectl for t in ts]),
            "" if mode == "configmap" else _med([t.attached for t in ts]),
            "" if mode == "configmap" else _med([t.compile_s for t in ts]),
            "" if mode == "configmap" else _med(rest),
            _med([t.ready for t in ts]), _span([t.ready for t in ts]),
            "1.0" if mode == "configmap" else _med(list(ratios), "{:.1f}"),
            "" if mode == "configmap" else f"{sum(t.compiles for t in ts)}/{len(ts)}",
            "" if mode == "configmap" else _med([t.agent_cpu for t in ts]),
        ])
    header = ["apply of", "n", "kubectl s", "->Attached s", "compile s", "Attached->Ready s",
              "->Ready s", "[min - max]", "ratio", "compiles", "agent CPU s"]
    return table(header, rows)


LEGEND = """
  Seconds from starting `kubectl apply` (kubectl s: the kubectl process alone); medians.
  ->Attached: the node's NodeReport lists the probe Attached at its generation (agent:
  watch event, BCC compile and load if needed, report). compile s: the agent's own
  traceprobe_agent_compile_seconds (in ->Attached). Attached->Ready: the operator's part
  (a refresh when a NodeReport changes state, else a status timer every 5 s). ratio: ->Ready
  / the same repeat's ConfigMap round trip (first: / the median one). compiles: programs
  the agent loaded during the trials / trials. agent CPU: the agent's CPU from apply to
  Ready."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.apply_to_ready", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (5)")
    p.add_argument("--quick", action="store_true", help="2 repeats (a smoke run)")
    args = p.parse_args(argv)
    repeats = 2 if args.quick and args.repeats == p.get_default("repeats") else args.repeats
    if os.geteuid() != 0:
        print("benchmarks.apply_to_ready: run as root (BPF)", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    work = Path(tempfile.mkdtemp(prefix="traceprobe-bench-apply-", dir=base))
    bench = Bench(work)
    try:
        bench.start()
        trials = run(bench, repeats)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the control plane, operator and agent", file=sys.stderr)
        return 130
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nApply to Ready: one node agent (real BCC), {repeats} interleaved "
          f"repeats of ConfigMap, cold and warm probe\n")
    print(render(trials))
    print(bench.footer)
    print(LEGEND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
