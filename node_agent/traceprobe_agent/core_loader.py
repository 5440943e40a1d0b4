"""Which connection core to load, and loading it: the sock_ops core where it loads and
links (the load is the feature probe: program types and attach points are listed
nowhere), the tracepoint core otherwise, remembering why."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from traceprobe_agent.bcc_runtime import BpfUnavailable, ConnTracker
from traceprobe_agent.features import KernelFeatures
from traceprobe_agent.program import (
    SOCK_OPS,
    TRACEPOINT,
    ProgramPlan,
    bpf_source,
    choose_core,
    plan_program,
)

log = logging.getLogger("traceprobe.agent")


@dataclass
class CoreLoader:
    preference: str  # auto, or one of program.CORES
    features: KernelFeatures
    cgroup_dir: str | None  # where cgroup programs link (None: no cgroup v2)
    refused: str | None = None  # why the sock_ops core failed to load here, once it did
    reason: str | None = None  # why the last plan's core is not the sock_ops one

    def __post_init__(self) -> None:
        choose_core(self.preference, True)  # an unknown name fails here

    def plan(self, kinds: set[str], max_connections: int) -> ProgramPlan:
        core, self.reason = choose_core(self.preference, self.cgroup_dir is not None,
                                        self.refused)
        return plan_program(kinds, self.features, max_connections, core=core)

    def load(self, plan: ProgramPlan) -> tuple[ConnTracker, ProgramPlan]:
        """`plan` loaded; a sock_ops core that does not load or link falls back to the
        tracepoint core (unless it alone was asked for)."""
        if plan.core == SOCK_OPS:
            try:
                return ConnTracker(bpf_source(*plan.sources), list(plan.cflags),
                                   cgroup_dir=self.cgroup_dir, links=plan.links,
                                   max_connections=plan.max_connections,
                                   tail_calls=plan.tail_calls,
                                   requests=plan.counts_requests), plan
            except BpfUnavailable as exc:
                if self.preference == SOCK_OPS:
                    raise
                self.refused = self.reason = str(exc)
                log.warning("%s; loading the tracepoint core instead", exc)
                plan = plan_program(set(plan.kinds) | set(plan.missing), self.features,
                                    plan.max_connections, core=TRACEPOINT)
                if not plan.runnable:
                    raise BpfUnavailable(f"{exc}; and the tracepoint core cannot run: "
                                         f"{plan.problem()}") from exc
        return ConnTracker(bpf_source(*plan.sources), list(plan.cflags), plan.kprobes), plan
