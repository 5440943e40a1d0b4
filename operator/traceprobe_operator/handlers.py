"""kopf handlers: thin glue between watch events and the pure decision modules.

The handlers are async so that they read kopf's indexes on the event loop, where
kopf updates them (traceprobe_operator.indexes); their blocking Kubernetes calls
run in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_api.kubeconfig import KubeconfigError
from traceprobe_api.resources import NODE_REPORTS, PROBE_PLURALS
from traceprobe_operator.agent_workload import ActiveProbe, render_daemonset
from traceprobe_operator.conditions import set_condition
from traceprobe_operator.context import MEMO_KEY, OperatorContext, operator_context
from traceprobe_operator.indexes import (
    NODE_LABELS,
    PROBE_REPORTS,
    NodeLabels,
    ProbeReports,
    nodes_of,
    reports_on,
)
from traceprobe_operator.kube import Kube
from traceprobe_operator.node_reports import (
    ProbeKey,
    probe_states,
    reported_probes,
    selected_nodes,
)
from traceprobe_operator.probe_status import summarise
from traceprobe_operator.settings import OperatorSettings
from traceprobe_operator.validation import spec_problem

FINALIZER = "traceprobe.io/agents-detached"
STATUS_REFRESH_SECONDS = 5.0
# In a NodeReport's own memo: the state of each probe it reported last time.
SEEN_STATES = "traceprobe.seen-states"


def seniority_priority() -> int:
    """A peering priority that falls with start time, so the longest-running
    replica stays active and every later one stands by (frozen) until it leaves.

    A frozen kopf operator stops watching, and so stops updating its indexes; on
    resuming it lists again, which adds and updates objects but never drops those
    deleted meanwhile. A replica that stood by from its start has listed nothing
    and takes over with complete indexes; a replica frozen after it was active
    would carry the deleted Nodes and NodeReports along, so no newcomer may
    freeze it. The random last digits keep replicas started in the same
    millisecond from sharing a priority, which would freeze them all.
    """
    return -(time.time_ns() // 1_000_000 * 1000 + random.randrange(1000))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Handler progress in annotations keeps `status` ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="traceprobe.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="traceprobe.io")
    settings.peering.name = "traceprobe"
    settings.peering.mandatory = True
    # Equal priorities freeze every replica; distinct ones make exactly one active
    # and let a standby take over when the active one's peering entry expires.
    settings.peering.priority = seniority_priority()
    # A replica killed without goodbye (SIGKILL, node loss) blocks the others until
    # its entry expires: 20 s instead of kopf's 60 s bounds that takeover.
    settings.peering.lifetime = 20
    settings.posting.level = logging.INFO
    try:
        memo[MEMO_KEY] = OperatorContext(OperatorSettings.from_env(), Kube())
    except (ValueError, KubeconfigError) as exc:  # no retry can mend either
        raise kopf.PermanentError(str(exc)) from exc


def _kind(body: Any) -> str:
    return str(body.get("kind") or "TraceProbe")


def _key(body: Any) -> ProbeKey:
    meta = body.get("metadata") or {}
    return _kind(body), meta.get("namespace"), str(meta["name"])


def _generation(body: Any) -> int:
    return int((body.get("metadata") or {}).get("generation") or 1)


def _indexes(kwargs: Mapping[str, Any]) -> tuple[NodeLabels, ProbeReports]:
    """The indexes kopf passes to every resource handler, each as the keyword
    argument named by its id (looked up here because kopf's handler signatures
    do not declare them)."""
    return kwargs[NODE_LABELS], kwargs[PROBE_REPORTS]


def _reconcile_daemonset(ctx: OperatorContext, logger: kopf.Logger) -> None:
    with ctx.daemonset_lock:
        active = [ActiveProbe(_kind(p), p["metadata"].get("namespace"), p["metadata"]["name"],
                              dict(p.get("spec", {}).get("nodeSelector") or {}))
                  for p in ctx.kube.list_probes()
                  if not p["metadata"].get("deletionTimestamp")
                  and spec_problem(_kind(p), p) is None]
        settings = ctx.settings
        if not active:
            if ctx.kube.delete_daemonset(settings.agent_daemonset, settings.namespace):
                logger.info("no probe needs agents: agent DaemonSet removed")
            return
        outcome = ctx.kube.apply_daemonset(render_daemonset(settings, active))
        if outcome != "unchanged":
            logger.info(f"agent DaemonSet {outcome} for {len(active)} probe(s)")


async def reconcile_daemonset(ctx: OperatorContext, logger: kopf.Logger) -> None:
    """Make the agent DaemonSet match the set of live probes (or remove it)."""
    await asyncio.to_thread(_reconcile_daemonset, ctx, logger)


async def _on_spec(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    ctx = operator_context(memo)
    kind, namespace, name = _key(body)
    generation = _generation(body)
    problem = spec_problem(kind, body)

    def accept(status: dict[str, Any]) -> dict[str, Any]:
        conditions = list(status.get("conditions") or [])
        if problem:
            conditions = set_condition(conditions, "Accepted", False, "InvalidSpec", problem,
                                       generation)
            conditions = set_condition(conditions, "Ready", False, "InvalidSpec",
                                       "not deployed: the spec is invalid", generation)
        else:
            conditions = set_condition(conditions, "Accepted", True, "Valid",
                                       "spec accepted", generation)
        return {**status, "observedGeneration": generation, "conditions": conditions}

    await asyncio.to_thread(ctx.kube.update_probe_status, kind, namespace, name, accept)
    if problem:
        kopf.warn(body, reason="InvalidSpec", message=problem)
    else:
        kopf.info(body, reason="Accepted", message=f"generation {generation} accepted")
    await reconcile_daemonset(ctx, logger)


async def _refresh_status(ctx: OperatorContext, body: kopf.Body,
                          indexes: tuple[NodeLabels, ProbeReports]) -> None:
    key = kind, namespace, name = _key(body)
    if spec_problem(kind, body):
        return
    generation = _generation(body)
    # Both indexes are read here, before the first await: one consistent view.
    nodes_index, reports_index = indexes
    nodes = selected_nodes(nodes_of(nodes_index), (body.get("spec") or {}).get("nodeSelector"))
    states = probe_states(reports_on(reports_index, key), datetime.now(UTC))
    stale_after = ctx.settings.report_stale_seconds
    flipped: list[dict[str, Any]] = []

    def refresh(status: dict[str, Any]) -> dict[str, Any]:
        old = list(status.get("conditions") or [])
        new = summarise(generation, nodes, states, old, stale_after)
        before: dict[str, Any] = next((c for c in old if c["type"] == "Ready"), {})
        after = next(c for c in new["conditions"] if c["type"] == "Ready")
        flipped[:] = [after] if before.get("status") != after["status"] else []
        return {**status, **new}

    await asyncio.to_thread(ctx.kube.update_probe_status, kind, namespace, name, refresh)
    for ready in flipped:  # an Event only when Ready changes, not every refresh
        emit = kopf.info if ready["status"] == "True" else kopf.warn
        emit(body, reason=ready["reason"], message=ready["message"])


async def _on_timer(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    await _refresh_status(operator_context(memo), body, _indexes(kwargs))


async def _on_delete(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo,
                     **kwargs: Any) -> None:
    """Hold the finalizer until agents report the probe detached, or time out."""
    ctx = operator_context(memo)
    key = kind, namespace, name = _key(body)
    now = datetime.now(UTC)
    _, reports_index = _indexes(kwargs)
    states = probe_states(reports_on(reports_index, key), now)
    attached = sorted(n for n, s in states.items() if s.state != "Detached"
                      and s.heartbeat_age_seconds <= ctx.settings.report_stale_seconds)
    deleted_at = (body.get("metadata") or {}).get("deletionTimestamp")
    waited = (now - datetime.fromisoformat(str(deleted_at).replace("Z", "+00:00"))
              ).total_seconds() if deleted_at else 0.0
    timeout = ctx.settings.detach_timeout_seconds
    if attached and waited < timeout:
        generation = _generation(body)
        message = f"waiting for {len(attached)} agent(s) to detach: {', '.join(attached[:5])}"

        def detaching(status: dict[str, Any]) -> dict[str, Any]:
            return {**status, "conditions": set_condition(
                list(status.get("conditions") or []), "Ready", False, "Detaching",
                message, generation)}

        await asyncio.to_thread(ctx.kube.update_probe_status, kind, namespace, name, detaching)
        raise kopf.TemporaryError(f"agents still attached on {', '.join(attached[:5])}",
                                  delay=2)
    if attached:
        kopf.warn(body, reason="DetachTimeout",
                  message=f"agents on {', '.join(attached[:5])} did not report detaching "
                          f"within {timeout:.0f}s; deleting anyway")
    await reconcile_daemonset(ctx, logger)


@kopf.on.event(API_GROUP, API_VERSION, NODE_REPORTS)
async def _on_report(body: kopf.Body, type: str | None, memo: kopf.Memo,
                     **kwargs: Any) -> None:
    """A probe's state changed on some node: refresh that probe's status now, not
    at its next timer tick (apply -> Ready in about a second, not about six).
    Heartbeats that change no state cost nothing here.

    kopf indexes each event before calling this, so the refresh sees this report.
    `memo` is this NodeReport's own (kopf keeps one per object), which is where
    its last seen states live."""
    states = {} if type == "DELETED" else {
        key: entry.state for key, entry in reported_probes(body).items()}
    seen: dict[ProbeKey, str] = memo.get(SEEN_STATES) or {}
    memo[SEEN_STATES] = states
    changed = [key for key in {**seen, **states} if seen.get(key) != states.get(key)]
    if not changed:
        return
    ctx = operator_context(memo)
    for kind, namespace, name in changed:
        obj = await asyncio.to_thread(ctx.kube.get_probe, kind, namespace, name)
        if obj and not (obj.get("metadata") or {}).get("deletionTimestamp"):
            await _refresh_status(ctx, kopf.Body(cast(kopf.RawBody, obj)), _indexes(kwargs))


def _register_probe_handlers() -> None:
    # Explicit ids: kopf keeps handler progress in annotations named after them.
    for plural in PROBE_PLURALS.values():
        kopf.on.create(API_GROUP, API_VERSION, plural, id="accept")(_on_spec)
        kopf.on.update(API_GROUP, API_VERSION, plural, field="spec", id="accept")(_on_spec)
        kopf.on.resume(API_GROUP, API_VERSION, plural, id="accept")(_on_spec)
        kopf.timer(API_GROUP, API_VERSION, plural, interval=STATUS_REFRESH_SECONDS,
                   initial_delay=1.0, id="status")(_on_timer)
        kopf.on.delete(API_GROUP, API_VERSION, plural, id="detach")(_on_delete)


_register_probe_handlers()
