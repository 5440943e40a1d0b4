"""The agent's core loop, independent of Kubernetes: apply a configuration,
drain the kernel every interval, hand records to a sink, keep its own stats.

Reconfiguration compiles a new program only when the plan changes (compile
once per configuration) and swaps it in without restarting the process.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from traceprobe_agent.bcc_runtime import ConnTracker
from traceprobe_agent.cgroups import CgroupNames
from traceprobe_agent.edges import to_record
from traceprobe_agent.features import KernelFeatures, probe_kernel
from traceprobe_agent.nat_events import NatTable
from traceprobe_agent.pod_cgroups import under
from traceprobe_agent.program import ProgramPlan, bpf_source, plan_program
from traceprobe_agent.report_sender import SenderStats
from traceprobe_api.records import ConnectionRecord

log = logging.getLogger("traceprobe.agent")
Sink = Callable[[list[ConnectionRecord]], None]


@dataclass(frozen=True)
class AgentConfig:
    kinds: frozenset[str] = frozenset({"connections", "failures", "bytes", "retransmits", "rtt"})
    max_connections: int = 65536
    interval_seconds: float = 10.0


@dataclass
class AgentStats:
    started: float = field(default_factory=time.monotonic)
    records: int = 0
    foreign_records: int = 0  # outside this agent's cgroup subtree, not reported
    connections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("opened", "closed", "refused", "timeouts", "resets"), 0))
    drains: int = 0
    last_drain_seconds: float = 0.0
    compiles: int = 0
    last_compile_seconds: float = 0.0
    kernel_counters: dict[str, int] = field(default_factory=dict)
    map_usage: dict[str, tuple[int, int]] = field(default_factory=dict)
    problem: str | None = None
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
                 nat: NatTable | None = None) -> None:
        self.node = node
        # Only processes under this cgroup subtree are this agent's: several
        # simulated nodes can share one kernel, each agent keeping to its own.
        self.cgroup_root = cgroup_root
        self.enrich = enrich
        self.nat = nat
        self.sink = sink
        self.features = features or probe_kernel()
        self.stats = AgentStats()
        self.plan: ProgramPlan | None = None
        self.config: AgentConfig | None = None
        self._tracker: ConnTracker | None = None
        self._cgroups = CgroupNames()
        self._lock = threading.Lock()
        self._interval_start = datetime.now(UTC)
        self._map_sampled_at = -float("inf")

    def apply(self, config: AgentConfig) -> ProgramPlan:
        """Run `config`; recompiles only when the resulting program differs."""
        plan = plan_program(set(config.kinds), self.features, config.max_connections)
        with self._lock:
            self.config = config
            if self.plan is not None and plan.cflags == self.plan.cflags and self._tracker:
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
            self._tracker = ConnTracker(bpf_source(), list(plan.cflags))
            self.stats.compiles += 1
            self.stats.last_compile_seconds = time.monotonic() - started
            log.info("loaded %s in %.2fs (%s)", ", ".join(plan.kinds),
                     self.stats.last_compile_seconds, " ".join(plan.cflags))
        return plan

    def tick(self) -> list[ConnectionRecord]:
        """Drain one interval's counts into records and give them to the sink."""
        with self._lock:
            records = self._flush_locked()
            if self._tracker is not None:
                self.stats.kernel_counters = self._tracker.counters()
        return records

    def _flush_locked(self) -> list[ConnectionRecord]:
        if self._tracker is None:
            return []
        started = time.monotonic()
        raw = self._tracker.drain()
        end = datetime.now(UTC)
        records = [to_record(k, v, self.node, self._interval_start, end, self._cgroups.path)
                   for k, v in raw]
        if self.cgroup_root is not None:
            mine = [r for r in records if under(r.cgroup_path, self.cgroup_root)]
            self.stats.foreign_records += len(records) - len(mine)
            records = mine
        if self.nat is not None:
            records = self.nat.annotate(records)
        if self.enrich is not None:
            records = [self.enrich(r) for r in records]
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
                self.stats.kernel_counters = self._tracker.counters()
        return self.stats.map_usage

    def program_ids(self) -> list[str]:
        with self._lock:
            return self._tracker.program_ids() if self._tracker else []

    def _close_locked(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            self._close_locked()
