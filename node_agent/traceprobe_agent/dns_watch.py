"""DNS responses from the kernel's tap into the agent's address → name table.

The tap (bpf/dns_answers.c) hands over raw responses; a short poll keeps its ring
buffer from filling between the agent's intervals. Only A/AAAA answers are kept
(dns_answers.parse_answers): names and addresses, nothing else of the traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from traceprobe_agent.bcc_runtime import DnsTap
from traceprobe_agent.dns_answers import DnsNames, parse_answers
from traceprobe_agent.program import DNS_SOURCE, MAX_CGROUPS, bpf_source

log = logging.getLogger("traceprobe.agent.dns")


class DnsWatch:
    def __init__(self, cgroup_dir: str, allowed: Callable[[int], bool] = lambda _: True,
                 poll_seconds: float = 0.5) -> None:
        """`allowed(cgroup id)`: may an answer to this process be learned (the kernel
        skips the processes known to be unselected; this decides the others)."""
        self.names = DnsNames()
        self.answers = 0
        self.unselected = 0  # answers dropped here, their receiver unselected
        self._allowed = allowed
        self._tap = DnsTap(bpf_source(DNS_SOURCE), cgroup_dir,
                           [f"-DMAX_CGROUPS={MAX_CGROUPS}"])
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poll_seconds = poll_seconds
        self._thread = threading.Thread(target=self._run, name="dns-watch", daemon=True)
        self._thread.start()
        log.info("naming external peers by DNS answers below %s", cgroup_dir)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            self.poll()

    def poll(self) -> None:
        """Learn from every response the kernel has handed over so far."""
        with self._lock:
            now = time.time()
            for cgroup_id, message in self._tap.consume():
                if not self._allowed(cgroup_id):
                    self.unselected += 1
                    continue
                answers = parse_answers(message)
                self.answers += len(answers)
                self.names.learn(answers, now)

    def sync_verdicts(self, wanted: dict[int, int]) -> None:
        with self._lock:
            self._tap.verdicts.sync(wanted)

    def program_ids(self) -> list[str]:
        return self._tap.program_ids()

    def name_of(self, address: str) -> str | None:
        with self._lock:
            return self.names.name_of(address, time.time())

    def counters(self) -> dict[str, int]:
        with self._lock:
            counters = self._tap.counters()
            counters["dns_unselected"] += self.unselected
            return {**counters, "dns_answers": self.answers,
                    "dns_names": len(self.names)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            self._tap.close()
