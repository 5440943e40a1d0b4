"""The observers under test: the traceprobe agent (standalone) with either connection
core, the sock_ops core with its request layer (probe kind http) on, each core's
hooks-only floor, and tcplife-bpfcc.

Each is started fresh for one workload, waited for until it has attached, and
stopped gracefully afterwards (the agent flushes its last interval on SIGTERM;
tcplife exits on SIGINT). What it recorded is then checked against what the
workload generator did.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families

from benchmarks import procs
from benchmarks.observer_base import Accounting, Observer, ObserverFailed, tail
from benchmarks.workloads import WorkloadResult
from traceprobe_agent.bcc_runtime import SOCK_OPS_PROGRAMS
from traceprobe_api.probe import DEFAULT_KINDS

REPO = Path(__file__).resolve().parent.parent
TCPLIFE = "/usr/sbin/tcplife-bpfcc"
_LOST = re.compile(r"[Pp]ossibly lost (\d+) samples")
_URL = re.compile(r"(http://127\.0\.0\.1:\d+)/metrics")


CORES = ("tracepoint", "sock_ops")  # the agent's --core choices, one variant each
HTTP_VARIANT = "sock_ops-http"  # the sock_ops agent with http added to its probe kinds
AGENTS = (*CORES, HTTP_VARIANT)
# Each agent variant's hooks-only floor: the request layer adds no hook (it runs in the
# same cgroup_skb programs, and in their tail calls).
FLOORS = {"tracepoint": "hooks-tracepoint", "sock_ops": "hooks-sock_ops",
          HTTP_VARIANT: "hooks-sock_ops"}


def _probes(args: list[str]) -> list[str]:
    """The probe kinds `args` ask for (--probes a,b or --probes=a,b), else the defaults."""
    for i, arg in enumerate(args):
        if arg == "--probes" and i + 1 < len(args):
            return args[i + 1].split(",")
        if arg.startswith("--probes="):
            return arg.split("=", 1)[1].split(",")
    return list(DEFAULT_KINDS)


def with_kinds(args: list[str], *kinds: str) -> list[str]:
    """The agent's extra arguments with `kinds` added to the probe kinds they ask for
    (a later --probes wins)."""
    asked = _probes(args)
    added = [k for k in kinds if k not in asked]
    return [*args, "--probes", ",".join([*asked, *added])] if added else list(args)


class Agent(Observer):
    """`python -m traceprobe_agent --standalone --interval 1 --metrics-port 0 --core CORE`,
    with `http` added to its probe kinds if asked."""

    # What each core attached last time (its hooks-only floor mirrors it); until it has
    # run: the default probe kinds on a kernel with every hook.
    last_programs: ClassVar[dict[str, list[str]]] = {
        "tracepoint": [
            "cgroup_skb/dns_ingress", "raw_tracepoint/sock_recv_length",
            "raw_tracepoint/sock_send_length", "raw_tracepoint/tcp_destroy_sock",
            "tracepoint/sock:inet_sock_set_state", "tracepoint/tcp:tcp_probe",
            "tracepoint/tcp:tcp_receive_reset", "tracepoint/tcp:tcp_retransmit_skb"],
        "sock_ops": sorted([*(f"cgroup/{name}" for name in SOCK_OPS_PROGRAMS
                              if "udp" not in name),  # udp is no default kind
                            "cgroup_skb/dns_ingress"])}

    # What the http variant attached when it differs from its floor's (the sock_ops
    # agent's): then that floor misses hooks (only with TRACEPROBE_BENCH_AGENT_ARGS).
    floor_misses: ClassVar[list[str]] = []

    def __init__(self, core: str, http: bool = False) -> None:
        super().__init__()
        self.core, self.http = core, http
        self.name = f"agent --core {core}" + (" +http" if http else "")

    def start(self, timeout: float) -> None:
        # e.g. "--probes connections,bytes" to price one probe kind
        extra = with_kinds(shlex.split(os.environ.get("TRACEPROBE_BENCH_AGENT_ARGS", "")),
                           *(k for k, on in (("udp", self.udp), ("http", self.http)) if on))
        argv = [sys.executable, "-m", "traceprobe_agent", "--standalone", "--interval", "1",
                "--metrics-port", "0", *extra,
                "--core", self.core]  # last: the variant's core wins over the line above
        self.out = self.out_path.open("w")
        self.proc = procs.spawn(argv, cwd=REPO, stdout=self.out, stderr=subprocess.PIPE,
                                text=True)
        self.url: str | None = None
        self.programs: list[str] = []
        self.ran_core: str | None = None
        ready = threading.Event()
        threading.Thread(target=self._read_stderr, args=(ready,), daemon=True).start()
        self._wait_until(ready, timeout)
        if self.ran_core != self.core:  # a row must be the core it is named after
            raise ObserverFailed(f"{self.name} runs the {self.ran_core} core")

    def _read_stderr(self, ready: threading.Event) -> None:
        assert self.proc.stderr is not None
        with self.err_path.open("w") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                if m := _URL.search(line):
                    self.url = m.group(1)
                if line.startswith("{"):
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if msg.get("ready"):
                        self.programs = list(msg.get("programs", []))
                        self.ran_core = msg.get("core")
                        if self.ran_core == self.core and not self.http:
                            Agent.last_programs[self.core] = self.programs
                        elif self.ran_core == self.core:
                            Agent.floor_misses = sorted(
                                set(self.programs) - set(Agent.last_programs[self.core]))
                        ready.set()

    def before_stop(self) -> None:
        self.drops = self.kernel_drops()

    def kernel_drops(self) -> dict[str, int]:
        if self.url is None:
            return {}
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return {sample.labels["cause"]: int(sample.value)
                for family in text_string_to_metric_families(text) for sample in family.samples
                if sample.name == "traceprobe_agent_kernel_drops_total"}

    def stop(self) -> None:
        code = procs.stop(self.proc, signal.SIGTERM, timeout=30)
        self.out.close()
        if code != 0:
            raise ObserverFailed(f"{self.name} exited with {code} on SIGTERM: "
                                 f"{tail(self.err_path)}")

    def records(self) -> list[dict[str, Any]]:
        rows = []
        for line in self.out_path.read_text().splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
        return rows

    def account(self, result: WorkloadResult) -> Accounting:
        ip, port = result.workload.where.server_ip, result.workload.port
        acc = Accounting(client_conns=0, server_conns=0, client_bytes=0, server_bytes=0,
                         drops=getattr(self, "drops", {}))
        if self.http:
            acc.client_requests = acc.server_requests = 0
        udp = result.workload.kind == "udp"  # exchanges are the client's datagrams
        servers = (None, result.server_pid, *result.server_workers)
        for r in self.records():
            role, pid = r.get("role"), r.get("pid")
            client = server = False
            if role == "udp":  # the tracepoint core: per process, no peer
                client, server = pid == result.client_pid, pid == result.server_pid
            elif udp != (r.get("transport") == "udp"):
                continue
            elif role == "client":
                client = (r.get("remoteIp") == ip and r.get("remotePort") == port
                          and pid == result.client_pid)
            elif role == "server":
                server = (r.get("localIp") == ip and r.get("localPort") == port
                          and pid in servers)
            if client:
                acc.client_conns += r.get("datagramsSent", 0) if udp else (
                    r.get("opened", 0) + r.get("refused", 0) + r.get("timeouts", 0))
                acc.client_bytes += r.get("bytesSent", 0)
            elif server:
                acc.server_conns += r.get("datagramsReceived", 0) if udp else r.get("opened", 0)
                acc.server_bytes += r.get("bytesReceived", 0)
            if self.http and (client or server):
                answered = sum(q.get("count", 0) for q in r.get("requests") or [])
                if client:
                    acc.client_requests = (acc.client_requests or 0) + answered
                else:
                    acc.server_requests = (acc.server_requests or 0) + answered
        return acc


class Tcplife(Observer):
    """Debian's tcplife-bpfcc with its default output: one line per closed connection."""

    name = "tcplife-bpfcc"

    def start(self, timeout: float) -> None:
        self.out = self.out_path.open("w")
        self.err = self.err_path.open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # like a terminal: a line at a time
        self.proc = procs.spawn([TCPLIFE], stdout=self.out, stderr=self.err, env=env)
        self._wait_until(None, timeout, lambda: "PID" in tail(self.out_path, 10_000))

    def stop(self) -> None:
        procs.stop(self.proc, signal.SIGINT, timeout=30)
        self.out.close()
        self.err.close()

    def account(self, result: WorkloadResult) -> Accounting:
        if result.workload.kind == "udp":
            return Accounting()  # TCP only: nothing of UDP to account
        ip, port = result.workload.where.server_ip, str(result.workload.port)
        client = server = lost = 0
        text = self.out_path.read_text(errors="replace") + self.err_path.read_text(
            errors="replace")
        for line in text.splitlines():
            if m := _LOST.search(line):
                lost += int(m.group(1))
                continue
            f = line.split()
            if len(f) < 9 or not f[0].isdigit():
                continue
            # PID COMM... LADDR LPORT RADDR RPORT TX_KB RX_KB MS (comm may hold spaces)
            laddr, lport, raddr, rport = f[-7], f[-6], f[-5], f[-4]
            if raddr == ip and rport == port and int(f[0]) == result.client_pid:
                client += 1
            elif laddr == ip and lport == port:
                server += 1
        return Accounting(client_conns=client, server_conns=server,
                          drops={"lost samples": lost})


class HooksOnly(Observer):
    """benchmarks/hooks_only.py: empty programs on the hooks one core's agent attached
    last time, that core's cost floor."""

    def __init__(self, core: str) -> None:
        super().__init__()
        self.core, self.name = core, f"hooks-{core}"

    def start(self, timeout: float) -> None:
        self.err = self.err_path.open("w")
        self.proc = procs.spawn([sys.executable, "-m", "benchmarks.hooks_only",
                                 *Agent.last_programs[self.core]], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=self.err)
        self._wait_until(None, timeout, lambda: '"ready"' in tail(self.err_path))

    def stop(self) -> None:
        code = procs.stop(self.proc, signal.SIGTERM, timeout=30)
        self.err.close()
        if code != 0:
            raise ObserverFailed(f"{self.name} exited with {code}: {tail(self.err_path)}")

    def account(self, result: WorkloadResult) -> Accounting:
        return Accounting()  # records nothing


OBSERVERS: dict[str, Callable[[], Observer]] = {
    **{core: partial(Agent, core) for core in CORES},
    HTTP_VARIANT: partial(Agent, "sock_ops", http=True),
    **{f"hooks-{core}": partial(HooksOnly, core) for core in CORES},
    "tcplife": Tcplife}


def program_names(ids: list[int]) -> dict[int, str]:
    """BPF program names (bpftool knows the full ones); `prog N` if it can't tell."""
    names = {i: f"prog {i}" for i in ids}
    if not ids:
        return names
    try:
        out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True,
                             text=True, timeout=30).stdout
        for prog in json.loads(out or "[]"):
            if prog.get("id") in names and prog.get("name"):
                names[prog["id"]] = prog["name"]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    return names
