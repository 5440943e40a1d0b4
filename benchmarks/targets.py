"""The Targets table: per connection core, the rate targets (rate, work-est and the
profile's estimate, the headline), its programs' cost over its own hooks-only floor, its
losses and its steady RSS; for the request layer (sock_ops-http), its rate on HTTP
against no agent and its rate elsewhere against the sock_ops agent without it."""

from __future__ import annotations

from collections.abc import Iterator

from benchmarks.observers import AGENTS, CORES, FLOORS, HTTP_VARIANT, Agent
from benchmarks.report import (
    NA,
    TARGET_BULK_RATIO,
    TARGET_CONN_RATIO,
    TARGET_HTTP_ON_OFF,
    TARGET_HTTP_RATIO,
    TARGET_OVER_FLOOR,
    TARGET_RSS_MB,
    num,
    prof_est,
    table,
    to_mb,
    verdict,
)
from benchmarks.results import Run, Summary, median
from benchmarks.workloads import kind_of


def _vs_baseline(name: str, target: float, w: str, agent: str, s: Summary,
                 profiled: list[Run]) -> list[str]:
    # Verdicts on the rate itself, on its estimate from the work each unit costs (which
    # the hypervisor's steal does not blur) and on the profile's (inside one run: the
    # headline).
    prof = prof_est(profiled, w, agent)
    return [f"{name} vs baseline >= {target}", w, agent,
            f"{num(s.ratio, '.3f')} (med/med {num(s.rate_of_medians, '.3f')}, "
            f"cpu-est {num(s.cpu_ratio, '.3f')}, work-est "
            f"{num(s.machine_ratio, '.3f')}, prof-est {num(prof, '.3f')})",
            f"rate {verdict(s.ratio, target)}, "
            f"work-est {verdict(s.machine_ratio, target)}, "
            f"prof-est {verdict(prof, target)}"]


def targets_block(summaries: dict[str, dict[str, Summary]], profiled: list[Run]) -> str:
    """Per workload and agent: the rate targets, its programs' cost over its own floor
    and its losses; per agent: steady RSS. `summaries`: workload -> variant -> Summary."""
    rows = []
    measured = list(_measured(summaries))
    cores = [m for m in measured if m[1] in CORES]
    for kind, target in (("churn", TARGET_CONN_RATIO), ("bulk", TARGET_BULK_RATIO)):
        name = "conn rate" if kind == "churn" else "bulk throughput"
        rows += [_vs_baseline(name, target, w, core, s, profiled)
                 for w, core, s in cores if _kind(s) == kind]
    rows += [_vs_baseline("request rate, requests on,", TARGET_HTTP_RATIO, w, agent, s,
                          profiled)
             for w, agent, s in measured if agent == HTTP_VARIANT and _kind(s) == "http"]
    rows += [_on_vs_off(w, s, summaries[w].get("sock_ops"), profiled)
             for w, agent, s in measured
             if agent == HTTP_VARIANT and _kind(s) in ("churn", "bulk")]
    for w, agent, s in measured:
        if agent in CORES or _kind(s) == "http":
            rows.append(_over_floor(w, agent, profiled))
    for w, agent, s in measured:
        u, drops, req = s.unaccounted(), s.drops(), s.unaccounted_requests()
        lost = None if u is None else (abs(u[0]) + abs(u[1]) + (drops or 0)
                                       + (abs(req[0]) + abs(req[1]) if req else 0))
        unit = {"bulk": "bytes", "udp": "datagrams"}.get(_kind(s), "conns")
        requests = f", requests cli {req[0]:,} srv {req[1]:,}" if req else ""
        rows.append(["zero unaccounted losses", w, agent,
                     NA if u is None else f"cli {u[0]:,} srv {u[1]:,} {unit}{requests}, "
                                          f"drops {drops}",
                     verdict(lost, 0, higher_is_better=False)])
    for agent in dict.fromkeys(agent for _, agent, _ in measured):
        rss = [x for _, a, s in measured if a == agent and (x := s.rss()) is not None]
        worst = to_mb(max(rss)) if rss else None
        rows.append([f"steady RSS <= {TARGET_RSS_MB:.0f} MB", "all (max of medians)", agent,
                     num(worst, ".1f") + " MB", verdict(worst, TARGET_RSS_MB, False)])
    return table(["target", "workload", "agent", "measured", "verdict"], rows)


def _over_floor(w: str, agent: str, profiled: list[Run]) -> list[str]:
    """The core's programs beyond its floor (a target); the request layer's too, on HTTP
    (no target: what parsing requests costs beyond reaching the hooks)."""
    floor_name = FLOORS[agent]
    prof, floor = prof_est(profiled, w, agent), prof_est(profiled, w, floor_name)
    over = None if prof is None or floor is None else floor - prof
    target = f"programs over own floor <= {100 * TARGET_OVER_FLOOR:.1f} pt"
    misses = f"; the floor lacks {', '.join(Agent.floor_misses)}" if (
        agent == HTTP_VARIANT and Agent.floor_misses) else ""
    return [target if agent in CORES else "programs over floor (no target)", w, agent,
            f"{num(100 * over if over is not None else None, '.2f')} pt ({floor_name} "
            f"prof-est {num(floor, '.3f')} - {num(prof, '.3f')}{misses})",
            verdict(over, TARGET_OVER_FLOOR, higher_is_better=False) if agent in CORES
            else "-"]


def on_off_ratio(http: Summary, plain: Summary | None) -> float | None:
    """Median over the repeats of sock_ops-http's rate / sock_ops's in the same repeat."""
    if plain is None:
        return None
    off = {r.repeat: r.result.rate for r in plain.ok_runs() if r.result and r.result.rate}
    return median([r.result.rate / off[r.repeat] for r in http.ok_runs()
                   if r.result and r.repeat in off])


def _on_vs_off(w: str, http: Summary, plain: Summary | None, profiled: list[Run]) -> list[str]:
    """Where no request is made, what the request layer costs: its prof-est over the
    sock_ops agent's (the headline), beside their paired rate ratio."""
    on, off = prof_est(profiled, w, HTTP_VARIANT), prof_est(profiled, w, "sock_ops")
    prof = on / off if on is not None and off else None
    rate = on_off_ratio(http, plain)
    return [f"requests on vs off (sock_ops) >= {TARGET_HTTP_ON_OFF}", w, HTTP_VARIANT,
            f"prof-est {num(prof, '.3f')} ({num(on, '.3f')} / {num(off, '.3f')}), "
            f"rate {num(rate, '.3f')}",
            f"prof-est {verdict(prof, TARGET_HTTP_ON_OFF)}, "
            f"rate {verdict(rate, TARGET_HTTP_ON_OFF)}"]


def _measured(summaries: dict[str, dict[str, Summary]]) -> Iterator[tuple[str, str, Summary]]:
    """(workload, agent, summary) of each agent variant that ran on each workload."""
    for w, by_variant in summaries.items():
        for agent in AGENTS:
            if (s := by_variant.get(agent)) is not None and s.runs:
                yield w, agent, s


def _kind(s: Summary) -> str:
    for r in s.runs:
        if r.result is not None:
            return r.result.workload.kind
    return kind_of(s.workload)
