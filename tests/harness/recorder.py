"""The agent, in process, recording what it drains: the e2e tests' observer."""

from __future__ import annotations

from typing import Any

from traceprobe_agent.agent import Agent, AgentConfig
from traceprobe_api.records import ConnectionRecord

ALL = frozenset({"connections", "failures", "bytes", "retransmits", "rtt", "dns"})
COUNTS = ("opened", "closed", "refused", "timeouts", "resets", "bytes_sent", "bytes_received",
          "retransmits", "rtt_samples", "datagrams_sent", "datagrams_received")


class Recorder:
    def __init__(self, kinds: frozenset[str] = ALL, core: str = "auto") -> None:
        self.records: list[ConnectionRecord] = []
        self.agent = Agent("node-1", self.records.extend, core=core)
        self.agent.apply(AgentConfig(kinds, 65536, 1.0))
        assert core == "auto" or self.agent.stats.core == core

    def flush(self) -> None:
        self.agent.tick()

    def edge(self, **match: Any) -> dict[str, int]:
        """Counters summed over the records whose fields equal `match`."""
        total: dict[str, int] = {}
        for record in self.records:
            if all(getattr(record, k) == v for k, v in match.items()):
                for field in COUNTS:
                    total[field] = total.get(field, 0) + getattr(record, field)
        return total

    def one(self, **match: Any) -> ConnectionRecord:
        found = [r for r in self.records if all(getattr(r, k) == v for k, v in match.items())]
        assert found, f"no record matching {match}"
        return found[0]
