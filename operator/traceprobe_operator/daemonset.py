"""The agent DaemonSet kept in line with the live, accepted probes (or removed)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf

from traceprobe_operator import objects
from traceprobe_operator.agent_workload import ActiveProbe, render_daemonset
from traceprobe_operator.context import OperatorContext
from traceprobe_operator.node_reports import ProbeKey
from traceprobe_operator.validation import spec_problem


def is_active(probe: Any, decided: Mapping[ProbeKey, bool]) -> bool:
    """Whether agents run for `probe`: not being deleted, and accepted. `decided`
    holds the verdicts being written right now; a probe not decided yet (no
    Accepted condition) counts, so that two probes accepted at once never drop
    each other (its own acceptance removes it if it fails)."""
    if objects.deleting(probe):
        return False
    key = objects.key(probe)
    if key in decided:
        return decided[key]
    if spec_problem(objects.kind(probe), probe) is not None:
        return False
    found = objects.condition(probe, "Accepted")
    return found is None or found.get("status") != "False"


def _reconcile(ctx: OperatorContext, logger: kopf.Logger,
               decided: Mapping[ProbeKey, bool]) -> None:
    # Acceptances run concurrently and each rewrites the whole DaemonSet from a
    # listing of the probes: one at a time, or an older listing could win.
    with ctx.daemonset_lock:
        active = [ActiveProbe(objects.kind(p), objects.meta(p).get("namespace"),
                              objects.meta(p)["name"],
                              dict((p.get("spec") or {}).get("nodeSelector") or {}))
                  for p in ctx.kube.list_probes() if is_active(p, decided)]
        settings = ctx.settings
        if not active:
            if ctx.kube.delete_daemonset(settings.agent_daemonset, settings.namespace):
                logger.info("no probe needs agents: agent DaemonSet removed")
            return
        outcome = ctx.kube.apply_daemonset(render_daemonset(settings, active))
        if outcome != "unchanged":
            logger.info(f"agent DaemonSet {outcome} for {len(active)} probe(s)")


async def reconcile_daemonset(ctx: OperatorContext, logger: kopf.Logger,
                              decided: Mapping[ProbeKey, bool] | None = None) -> None:
    """Make the agent DaemonSet match the set of active probes (or remove it)."""
    await asyncio.to_thread(_reconcile, ctx, logger, dict(decided or {}))
