"""The agent's core loop, independent of Kubernetes: apply a configuration,
drain the kernel every interval, hand records to a sink, keep its own stats.

Reconfiguration compiles a new program only when the plan changes (compile
once per configuration) and swaps it in without restarting the process.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from traceprobe_agent.bcc_runtime import BpfUnavailable, ConnTracker
from traceprobe_agent.cgroups import CgroupNames, cgroup2_mount
from traceprobe_agent.core_loader import CoreLoader
from traceprobe_agent.dns_watch import DnsWatch
from traceprobe_agent.edges import mark_node_peers, to_record
from traceprobe_agent.features import KernelFeatures, probe_kernel
from traceprobe_agent.nat_events import NatTable
from traceprobe_agent.pod_cgroups import under
from traceprobe_agent.pod_index import AwaitPods
from traceprobe_agent.program import ProgramPlan, without_fallback
from traceprobe_agent.report_sender import SenderStats
from traceprobe_api.probe import DEFAULT_KINDS
from traceprobe_api.records import ConnectionRecord, Role

if TYPE_CHECKING:  # scope.py reads the probes' views, which name AgentConfig
    from traceprobe_agent.scope import Selection

log = logging.getLogger("traceprobe.agent")
Sink = Callable[[list[ConnectionRecord]], None]


def print_records(records: list[ConnectionRecord]) -> None:
    """The stdout sink: one JSON record per line (standalone, or beside the map)."""
    for record in records:
        sys.stdout.write(json.dumps(record.to_dict(), separators=(",", ":")) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class AgentConfig:
    kinds: frozenset[str] = frozenset(DEFAULT_KINDS)
    max_connections: int = 65536
    interval_seconds: float = 10.0


@dataclass
class AgentStats:
    started: float = field(default_factory=time.monotonic)
    records: int = 0
    foreign_records: int = 0  # outside this agent's cgroup subtree, not reported
    invalid_records: int = 0  # a kernel entry no valid record could be made of (skipped)
    tick_errors: int = 0  # intervals whose processing failed (logged; the loop goes on)
    connections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("opened", "closed", "refused", "timeouts", "resets"), 0))
    drains: int = 0
    last_drain_seconds: float = 0.0
    compiles: int = 0
    last_compile_seconds: float = 0.0
    kernel_counters: dict[str, int] = field(default_factory=dict)
    map_usage: dict[str, tuple[int, int]] = field(default_factory=dict)
    problem: str | None = None
    core: str | None = None  # the connection core loaded (program.CORES)
    core_reason: str | None = None  # why not the sock_ops core
    report: SenderStats | None = None  # edge reports to the service map, when sent

    def cpu_seconds(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    @staticmethod
    def rss_bytes() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    @staticmethod
    def peak_rss_bytes() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Agent:
    def __init__(self, node: str, sink: Sink, features: KernelFeatures | None = None,
                 cgroup_root: str | None = None,
                 enrich: Callable[[ConnectionRecord], ConnectionRecord] | None = None,
                 nat: NatTable | None = None,
                 node_addresses: Callable[[], frozenset[str]] | None = None,
                 await_pods: AwaitPods | None = None,
                 selection: Selection | None = None, core: str = "auto") -> None:
        self.node = node
        # What the probes observe (in a cluster); None observes every process.
        self.selection = selection
        # Records of pods the watch has not told us about yet wait for their names.
        self.await_pods = await_pods
        # This node's own addresses (host_addresses.NodeAddresses): a remote among
        # them is this node, which its Node object may not list.
        self.node_addresses = node_addresses
        # Only processes under this cgroup subtree are this agent's: several
        # simulated nodes can share one kernel, each agent keeping to its own.
        self.cgroup_root = cgroup_root
        self.enrich = enrich
        self.nat = nat
        self.sink = sink
        self.features = features or probe_kernel()
        # Which connection core to load: auto (sock_ops where it loads), or one of them;
        # cgroup programs link at this agent's subtree of the cgroup v2 hierarchy.
        root = cgroup2_mount()
        self.cores = CoreLoader(core, self.features, str(
            root / (cgroup_root or "").lstrip("/")) if root else None)
        self.stats = AgentStats()
        self.plan: ProgramPlan | None = None
        self.config: AgentConfig | None = None
        self._tracker: ConnTracker | None = None
        self._dns: DnsWatch | None = None
        self._cgroups = CgroupNames()
        self._lock = threading.Lock()
        self._interval_start = datetime.now(UTC)
        self._map_sampled_at = -float("inf")
        self._last_tick_error = ""

    def apply(self, config: AgentConfig) -> ProgramPlan:
        """Run `config`; recompiles only when the resulting program differs."""
        plan = self.cores.plan(set(config.kinds), config.max_connections)
        with self._lock:
            self.config = config
            if (self.plan is not None and (plan.core, plan.cflags) == (
                    self.plan.core, self.plan.cflags) and self._tracker):
                self.plan = plan
                self._sync_dns_locked()
                return plan
            self._flush_locked()  # counts of the old program are not lost
            self._close_locked()
            self.plan = plan
            self.stats.problem = plan.problem()
            self._map_sampled_at = -float("inf")
            if not plan.runnable:
                log.error("not loading: %s", plan.problem())
                return plan
            started = time.monotonic()
            self._tracker, plan = self.cores.load(plan)
            self.plan = plan
            self.stats.core, self.stats.core_reason = plan.core, self.cores.reason
            self.stats.problem = plan.problem()
            if self._tracker.kprobe_problem:  # the kind it stood in for is not running
                plan = self.plan = without_fallback(plan, self.features,
                                                    self._tracker.kprobe_problem)
                self.stats.problem = plan.problem()
            self.stats.compiles += 1
            self.stats.last_compile_seconds = time.monotonic() - started
            log.info("loaded the %s core: %s in %.2fs (%s)", plan.core, ", ".join(plan.kinds),
                     self.stats.last_compile_seconds, " ".join(plan.cflags))
            self._sync_dns_locked()
            self._sync_verdicts_locked()
        return plan

    def sync_scope(self) -> None:
        """Tell the kernel what the selection now observes (probes, pods or namespaces
        changed): new connections of a process just selected or dropped count, or stop
        counting, from here on."""
        with self._lock:
            self._sync_verdicts_locked()

    def _sync_verdicts_locked(self) -> None:
        if self.selection is None or (self._tracker is None and self._dns is None):
            return
        wanted = self.selection.kernel_verdicts(self._cgroups.live().items())
        if self._tracker is not None:
            self._tracker.verdicts.sync(wanted)
        if self._dns is not None:
            self._dns.sync_verdicts(wanted)

    def _sync_dns_locked(self) -> None:
        """The DNS tap runs while `dns` is planned; failing to load it degrades only
        the naming (the reason joins the problem), never the connection program."""
        wanted = self.plan is not None and "dns" in self.plan.kinds
        if not wanted and self._dns is not None:
            self._dns.close()
            self._dns = None
        if wanted and self._dns is None:
            where = self.cores.cgroup_dir
            try:
                if where is None:
                    raise BpfUnavailable("no cgroup v2 hierarchy mounted")
                self._dns = DnsWatch(where, self._dns_allowed)
            except (BpfUnavailable, OSError) as exc:
                reason = f"dns naming unavailable: {exc}"
                log.error("%s", reason)
                self.stats.problem = "; ".join(p for p in (self.stats.problem, reason) if p)

    def _dns_allowed(self, cgroup_id: int) -> bool:
        """An answer the kernel could not decide on: learn it unless its receiver is
        known to be unselected."""
        return self.selection is None or self.selection.allows(self._cgroups.path(cgroup_id))

    def tick(self) -> list[ConnectionRecord]:
        """Drain one interval's counts into records and give them to the sink. A failure
        is logged (once per cause) and counted, and the next interval runs: the agent's
        queue and programs outlive one bad interval."""
        with self._lock:
            try:
                self._sync_verdicts_locked()  # cgroups created since the last look
                records = self._flush_locked()
            except Exception as exc:  # whatever it is, the process must go on
                cause = f"{type(exc).__name__}: {exc}"
                if cause != self._last_tick_error:
                    log.exception("an interval failed (%s); continuing", cause)
                    self._last_tick_error = cause
                self.stats.tick_errors += 1
                records = []
            if self._tracker is not None:
                self.stats.kernel_counters = self._counters_locked()
        return records

    def _counters_locked(self) -> dict[str, int]:
        counters = self._tracker.counters() if self._tracker is not None else {}
        return {**counters, **(self._dns.counters() if self._dns is not None else {})}

    def _records(self, raw: list[tuple[dict[str, Any], dict[str, Any]]], end: datetime,
                 end_monotonic_ns: int) -> list[ConnectionRecord]:
        """One record per kernel entry; an entry that makes no valid record (a cgroup path
        beyond the record's bound, say) is skipped and counted, never the whole drain."""
        records = []
        for key, val in raw:
            try:
                records.append(to_record(key, val, self.node, self._interval_start, end,
                                         self._cgroups.path, end_monotonic_ns))
            except ValidationError as exc:
                if not self.stats.invalid_records:
                    log.error("skipping a kernel entry that makes no valid record: %s",
                              " ".join(str(exc).split()))
                self.stats.invalid_records += 1
        return records

    def _flush_locked(self, final: bool = False) -> list[ConnectionRecord]:
        if self._tracker is None:
            held = self.await_pods.drain() if final and self.await_pods is not None else []
            if held:
                self.sink(held)
            return held
        started = time.monotonic()
        raw = self._tracker.drain()
        end, end_monotonic_ns = datetime.now(UTC), time.monotonic_ns()
        records = self._records(raw, end, end_monotonic_ns)
        if self.cgroup_root is not None:
            mine = [r for r in records if under(r.cgroup_path, self.cgroup_root)]
            self.stats.foreign_records += len(records) - len(mine)
            records = mine
        if self.selection is not None:  # before anything else is spent on them
            records = self.selection.keep(records)
        if self.nat is not None:
            records = self.nat.annotate(records)
        if self.enrich is not None:
            records = [self.enrich(r) for r in records]
        if self.await_pods is not None:
            records = self.await_pods(records)
            if final:
                records += self.await_pods.drain()
        if self.selection is not None:  # those that waited for their pod, decided now
            records = self.selection.keep(records, final=True)
        if self.node_addresses is not None:
            mark_node_peers(records, self.node_addresses())
        if self._dns is not None:
            self._dns.poll()
            for r in records:
                if r.role is Role.CLIENT and r.remote_ip:
                    name = self._dns.name_of(r.remote_ip)
                    if name:
                        r.remote_dns_name = name
        self._interval_start = end
        self.stats.drains += 1
        self.stats.records += len(records)
        for record in records:
            for event in self.stats.connections:
                self.stats.connections[event] += getattr(record, event)
        self.stats.last_drain_seconds = time.monotonic() - started
        if records:
            self.sink(records)
        return records

    def sample_map_usage(self, max_age_seconds: float = 30.0) -> dict[str, tuple[int, int]]:
        """Map fill (and drop counters); counting entries walks every key, so a
        sample younger than `max_age_seconds` is reused (reports and scrapes)."""
        with self._lock:
            fresh = time.monotonic() - self._map_sampled_at < max_age_seconds
            if self._tracker is not None and not fresh:
                self.stats.map_usage = self._tracker.map_usage()
                self._map_sampled_at = time.monotonic()
            if self._tracker is not None:
                self.stats.kernel_counters = self._counters_locked()
        return self.stats.map_usage

    def program_ids(self) -> list[str]:
        with self._lock:
            return sorted((self._tracker.program_ids() if self._tracker else [])
                          + (self._dns.program_ids() if self._dns else []))

    def _close_locked(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        self.stats.core = None

    def close(self) -> None:
        with self._lock:
            self._flush_locked(final=True)
            self._close_locked()
            if self._dns is not None:
                self._dns.close()
                self._dns = None
            self._cgroups.close()  # after the flush, which still named its records
