"""Where connections to a Service really went: conntrack's DNAT events.

kube-proxy rewrites a ClusterIP destination to a backend pod in netfilter; the
client's socket (and so our tracepoints) only ever sees the ClusterIP. The
kernel announces each new NATed flow on a netlink group; `conntrack -E`
relays it. We queue new flows per (client ip, ClusterIP, port), and the drain
hands each client record as many of them as it counted attempts, so the map can
show both the Service and the real backend on one edge, the parts summing to it.

Parsing and the table are pure; `NatWatcher` is the I/O (one subprocess).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from traceprobe_api.records import MAX_BACKENDS, ConnectionRecord, Role

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


def _flow_key(r: ConnectionRecord) -> FlowKey:
    return (r.local_ip or "", r.remote_ip or "", r.remote_port or 0)


def _attempts(r: ConnectionRecord) -> int:
    """Each attempt (established, refused or timed out) passed conntrack as one flow."""
    return r.opened + r.refused + r.timeouts


@dataclass
class NatTable:
    """DNAT flows waiting for the client records that count them.

    Each record takes, oldest first, as many flows of its (client ip, ClusterIP,
    port) as it counted attempts (established, refused or timed out: each passed
    conntrack as one NEW flow), so a record's backends never sum above its attempts
    and a flow is never counted twice; the map shows any attempt left without a flow
    (an event lost or still unread) as of unknown backend. A flow's event may come a
    little after the kernel counted its connection: `annotate` waits a moment for
    those, and flows that no record claims within `keep_drains` drains (a connection
    still opening, a process outside this agent's cgroups) are dropped and counted.
    Flows of clients that no probe observes (`skips_client`) are not kept at all: no
    record of theirs will come to claim them."""

    max_keys: int = 100_000
    keep_drains: int = 2  # a flow's record may land one drain after its event
    settle_seconds: float = 0.25  # the longest a drain waits for events still unread
    lost_events: int = 0  # netlink overflow (ENOBUFS) or table cap
    unclaimed_flows: int = 0  # aged out with no record counting them
    unselected_flows: int = 0  # of clients no probe observes: never kept
    skips_client: Callable[[str], bool] | None = None
    _flows: dict[FlowKey, deque[str]] = field(default_factory=dict)
    _age: dict[FlowKey, int] = field(default_factory=dict)
    _natted: set[tuple[str, int]] = field(default_factory=set)
    """(ClusterIP, port) pairs seen rewritten: their records are worth waiting for."""
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def add(self, flow: NatFlow) -> None:
        if self.skips_client is not None and self.skips_client(flow.key[0]):
            self.unselected_flows += 1
            return
        with self._arrived:
            if flow.key not in self._flows and len(self._flows) >= self.max_keys:
                self.lost_events += 1
                return
            self._flows.setdefault(flow.key, deque()).append(flow.backend)
            self._age[flow.key] = 0
            if len(self._natted) < self.max_keys:
                self._natted.add(flow.key[1:])
            self._arrived.notify_all()

    @staticmethod
    def _wants(records: list[ConnectionRecord]) -> Counter[FlowKey]:
        wanted: Counter[FlowKey] = Counter()
        for r in records:
            if r.role is Role.CLIENT:
                wanted[_flow_key(r)] += _attempts(r)
        return wanted

    def _short(self, wanted: Counter[FlowKey]) -> bool:
        return any(n > len(self._flows.get(key, ())) for key, n in wanted.items()
                   if key[1:] in self._natted)

    def annotate(self, records: list[ConnectionRecord]) -> list[ConnectionRecord]:
        """Attach (and consume) backend counts to client records; age the rest."""
        wanted = self._wants(records)
        out = []
        with self._arrived:
            self._arrived.wait_for(lambda: not self._short(wanted), self.settle_seconds)
            for r in records:
                key = _flow_key(r)
                flows = self._flows.get(key) if r.role is Role.CLIENT else None
                if flows:
                    taken = Counter(flows.popleft() for _ in range(min(len(flows), _attempts(r))))
                    if not flows:
                        del self._flows[key]
                        self._age.pop(key, None)
                    if taken:
                        r = r.replaced(backends=dict(taken.most_common(MAX_BACKENDS)))
                out.append(r)
            for key in list(self._age):
                self._age[key] += 1
                if self._age[key] > self.keep_drains:
                    del self._age[key]
                    self.unclaimed_flows += len(self._flows.pop(key, ()))
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
