"""One measured run and the per-(workload, variant) summaries the tables print."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from benchmarks.cpuprofile import Shares
from benchmarks.observer_base import Accounting
from benchmarks.workloads import WorkloadResult

BASELINE = "baseline"
# Events lost, not anomalies (a full requests map loses requests).
DROP_CAUSES = ("conn_map_full", "edge_map_full", "request_map_full", "lost samples")


@dataclass
class Run:
    repeat: int
    variant: str
    workload: str
    result: WorkloadResult | None = None
    cpu: float | None = None      # observer CPU seconds over the workload and settling
    rss: int | None = None        # observer VmRSS at the end of the workload
    hwm: int | None = None        # observer VmHWM (peak, compile included)
    acc: Accounting | None = None
    bpf: dict[str, tuple[int, int]] = field(default_factory=dict)  # program -> (runs, ns)
    tail_calls: dict[str, list[str]] = field(default_factory=dict)  # program -> callers
    error: str | None = None
    other_cpu: float | None = None  # share of all CPUs busy with neither generator nor observer
    machine_cpu: float | None = None  # CPU seconds of work on all CPUs, any context, no steal
    steal: float | None = None  # CPU seconds the hypervisor took during the traffic
    prof: Shares | None = None  # the profile pass: where the CPU went

    @property
    def ok(self) -> bool:
        return self.error is None and self.result is not None

    @property
    def units(self) -> float:
        """Connections (churn), answered datagrams (udp) or requests (http), or GiB (bulk)
        the workload moved."""
        assert self.result is not None
        if self.result.workload.exchanges:
            return float(self.result.completed)
        return self.result.bytes_sent / 2**30

    def cpu_per_unit(self) -> float | None:
        """CPU seconds per unit of the generator's processes plus the observer's."""
        if self.result is None or not self.units:
            return None
        return (self.result.client_cpu + self.result.server_cpu + (self.cpu or 0.0)) / self.units

    def machine_cpu_per_unit(self) -> float | None:
        """All the machine's work (generator, observer, softirq wherever it ran) per unit."""
        if self.machine_cpu is None or self.result is None or not self.units:
            return None
        return self.machine_cpu / self.units

    def unaccounted(self) -> tuple[int, int] | None:
        """(client, server) connections the observer missed (churn, http), datagrams
        (udp) or bytes (bulk)."""
        r, a = self.result, self.acc
        if r is None or a is None or a.client_conns is None or a.server_conns is None:
            return None
        if r.workload.kind == "bulk":
            if a.client_bytes is None or a.server_bytes is None:
                return None
            return r.bytes_sent - a.client_bytes, r.server_bytes_received - a.server_bytes
        return r.attempted - a.client_conns, r.server_accepted - a.server_conns

    def unaccounted_requests(self) -> tuple[int, int] | None:
        """(client, server) http requests the observer missed; None when it counts none.
        The server answered `served`; wrk counted `completed`, less the few still in
        flight when it stopped, which the client may or may not have seen answered: a
        client count between the two misses nothing, beyond them is off by the rest."""
        r, a = self.result, self.acc
        if r is None or a is None or r.served is None or a.client_requests is None \
                or a.server_requests is None:
            return None
        low, high, got = r.completed, r.served, a.client_requests
        client = low - got if got < low else high - got if got > high else 0
        return client, r.served - a.server_requests

    def drops(self) -> int:
        return sum(v for k, v in (self.acc.drops if self.acc else {}).items()
                   if k in DROP_CAUSES)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass
class Summary:
    """Medians over the repeats of one variant on one workload."""

    workload: str
    variant: str
    runs: list[Run]
    rates: list[float]
    ratios: list[float]           # paired with the baseline run of the same repeat
    errors: list[str]
    base_rate: float | None = None  # the baseline's median rate on this workload
    base_cpu: float | None = None   # the baseline's median CPU per unit (generator)
    base_machine: float | None = None  # the baseline's median machine work per unit

    @property
    def rate(self) -> float | None:
        return median(self.rates)

    @property
    def ratio(self) -> float | None:
        return median(self.ratios)

    @property
    def rate_of_medians(self) -> float | None:
        """Median rate / the baseline's median rate (unpaired)."""
        return self.rate / self.base_rate if self.rate and self.base_rate else None

    @property
    def cpu_ratio(self) -> float | None:
        """Baseline's median CPU per unit / this variant's (generator + observer)."""
        mine = median([c for r in self.ok_runs() if (c := r.cpu_per_unit()) is not None])
        return self.base_cpu / mine if mine and self.base_cpu else None

    @property
    def machine_ratio(self) -> float | None:
        """Baseline's median machine work per unit / this variant's: the saturation rate
        ratio if the work is CPU-bound, immune to time the hypervisor steals."""
        mine = median([c for r in self.ok_runs() if (c := r.machine_cpu_per_unit())])
        return self.base_machine / mine if mine and self.base_machine else None

    def steal_share(self) -> float | None:
        """Stolen CPU time as a share of the machine's work (a noise gauge)."""
        return median([r.steal / r.machine_cpu for r in self.ok_runs()
                       if r.steal is not None and r.machine_cpu])

    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    def obs_cpu_per_unit(self) -> float | None:
        """The observer's CPU seconds per connection (churn) or GiB (bulk)."""
        return median([r.cpu / r.units for r in self.ok_runs() if r.cpu is not None and r.units])

    def workload_cpu_per_unit(self) -> float | None:
        """CPU seconds of the generator's client and server per connection or GiB."""
        return median([(r.result.client_cpu + r.result.server_cpu) / r.units
                       for r in self.ok_runs() if r.result and r.units])

    def other_cpu(self) -> float | None:
        return median([r.other_cpu for r in self.ok_runs() if r.other_cpu is not None])

    def rss(self) -> float | None:
        return median([float(r.rss) for r in self.ok_runs() if r.rss is not None])

    def peak(self) -> float | None:
        values = [float(r.hwm) for r in self.ok_runs() if r.hwm is not None]
        return max(values) if values else None

    def drops(self) -> int | None:
        runs = [r for r in self.ok_runs() if r.acc is not None]
        return sum(r.drops() for r in runs) if runs else None

    def anomalies(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.ok_runs():
            for k, v in (r.acc.drops if r.acc else {}).items():
                if k not in DROP_CAUSES and v:
                    out[k] = out.get(k, 0) + v
        return out

    def failed(self) -> int:
        return sum(r.result.failed for r in self.ok_runs() if r.result)

    def error_kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.ok_runs():
            for k, n in (r.result.errors if r.result else {}).items():
                out[k] = out.get(k, 0) + n
        return out

    def unaccounted(self) -> tuple[int, int] | None:
        return _summed([r.unaccounted() for r in self.ok_runs()])

    def unaccounted_requests(self) -> tuple[int, int] | None:
        return _summed([r.unaccounted_requests() for r in self.ok_runs()])

    def requests(self) -> tuple[int, int] | None:
        """http requests the observer counted, client and server side, over the runs;
        None when it counts none."""
        return _summed([(r.acc.client_requests, r.acc.server_requests)
                        if r.acc and r.acc.client_requests is not None
                        and r.acc.server_requests is not None else None
                        for r in self.ok_runs()])

    def expected(self) -> int:
        """Connections (churn, http), datagrams (udp) or bytes (bulk) the generator
        produced over all repeats."""
        total = 0
        for r in self.ok_runs():
            assert r.result is not None
            w = r.result
            total += w.bytes_sent if w.workload.kind == "bulk" else w.attempted
        return total


def _summed(pairs: list[tuple[int, int] | None]) -> tuple[int, int] | None:
    """The runs' (client, server) pairs added up (None: no run has one)."""
    known = [p for p in pairs if p is not None]
    if not known:
        return None
    return sum(c for c, _ in known), sum(s for _, s in known)


def summarise(runs: list[Run], workload: str, variant: str) -> Summary:
    mine = [r for r in runs if r.workload == workload and r.variant == variant]
    base = {r.repeat: r.result for r in runs
            if r.workload == workload and r.variant == BASELINE and r.ok and r.result}
    rates, ratios = [], []
    for r in mine:
        if not r.ok or r.result is None:
            continue
        rates.append(r.result.rate)
        b = base.get(r.repeat)
        if b is not None and b.rate:
            ratios.append(r.result.rate / b.rate)
    base_runs = [r for r in runs if r.workload == workload and r.variant == BASELINE and r.ok]
    return Summary(workload, variant, mine, rates, ratios, [r.error for r in mine if r.error],
                   base_rate=median([r.result.rate for r in base_runs if r.result]),
                   base_cpu=median([c for r in base_runs if (c := r.cpu_per_unit()) is not None]),
                   base_machine=median([c for r in base_runs if (c := r.machine_cpu_per_unit())]))
