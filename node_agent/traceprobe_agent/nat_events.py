"""Where connections to a Service really went: conntrack's DNAT events.

kube-proxy rewrites a ClusterIP destination to a backend pod in netfilter; the
client's socket (and so our tracepoints) only ever sees the ClusterIP. The
kernel announces each new NATed flow on a netlink group; `conntrack -E`
relays it. We count new flows per (client ip, ClusterIP, port) → backend, and
the drain attaches those counts to the matching client records, so the map
can show both the Service and the real backend on one edge.

Parsing and the table are pure; `NatWatcher` is the I/O (one subprocess).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field

from traceprobe_api.records import ConnectionRecord, Role

log = logging.getLogger("traceprobe.agent.nat")
_TUPLE = re.compile(r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)")
FlowKey = tuple[str, str, int]  # client ip, original destination ip, original port


@dataclass(frozen=True)
class NatFlow:
    key: FlowKey
    backend: str  # ip:port the flow was rewritten to


def _hostport(ip: str, port: str) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_event(line: str) -> NatFlow | None:
    """One `conntrack -E` line; None for anything that is not a DNATed new flow."""
    if "[NEW]" not in line:
        return None
    tuples = _TUPLE.findall(line)
    if len(tuples) != 2:
        return None
    (src, dst, _sport, dport), (reply_src, _reply_dst, reply_sport, _) = tuples
    if reply_src == dst:
        return None  # not rewritten
    return NatFlow((src, dst, int(dport)), _hostport(reply_src, reply_sport))


@dataclass
class NatTable:
    max_keys: int = 100_000
    keep_drains: int = 2  # a flow's record may land one drain after its event
    lost_events: int = 0  # netlink overflow (ENOBUFS) or table cap
    _counts: dict[FlowKey, Counter[str]] = field(default_factory=dict)
    _age: dict[FlowKey, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, flow: NatFlow) -> None:
        with self._lock:
            if flow.key not in self._counts and len(self._counts) >= self.max_keys:
                self.lost_events += 1
                return
            self._counts.setdefault(flow.key, Counter())[flow.backend] += 1
            self._age[flow.key] = 0

    def annotate(self, records: list[ConnectionRecord]) -> list[ConnectionRecord]:
        """Attach (and consume) backend counts to client records; age the rest."""
        out = []
        with self._lock:
            for r in records:
                key = (r.local_ip or "", r.remote_ip or "", r.remote_port or 0)
                counts = self._counts.pop(key, None) if r.role is Role.CLIENT else None
                if counts:
                    self._age.pop(key, None)
                    r = r.replaced(backends=dict(counts))
                out.append(r)
            for key in list(self._age):
                self._age[key] += 1
                if self._age[key] > self.keep_drains:
                    del self._age[key]
                    self._counts.pop(key, None)
        return out


class NatWatcher:
    """Feeds a NatTable from `conntrack -E` until stopped; restarts it if it dies."""

    COMMAND = ("conntrack", "-E", "-e", "NEW", "-p", "tcp", "--dst-nat")

    def __init__(self, table: NatTable) -> None:
        self.table = table
        self.problem: str | None = None
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        if shutil.which(self.COMMAND[0]) is None:
            self.problem = ("conntrack not found: Service backends come from EndpointSlices "
                            "only (install the conntrack package)")
            return
        threading.Thread(target=self._run, daemon=True, name="nat-events").start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._proc = subprocess.Popen(self.COMMAND, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True)
            except OSError as exc:
                self.problem = f"conntrack -E failed to start: {exc}"
                self._stop.wait(10)
                continue
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                flow = parse_event(line)
                if flow is not None:
                    self.table.add(flow)
                elif "ENOBUFS" in line:
                    self.table.lost_events += 1
                elif "conntrack v" not in line and line.strip():
                    self.problem = f"conntrack -E: {line.strip()}"
            self._proc.wait()
            if not self._stop.is_set():
                log.warning("conntrack -E exited (%s); restarting in 5s", self.problem)
                self._stop.wait(5)

    def close(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
