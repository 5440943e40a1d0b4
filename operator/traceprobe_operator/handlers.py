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
from traceprobe_operator import objects
from traceprobe_operator.accepting import (
    accept,
    accept_due,
    accept_lock,
    add_finalizer,
    probe_state,
    recheck,
)
from traceprobe_operator.conditions import find_condition, set_condition
from traceprobe_operator.context import MEMO_KEY, OperatorContext, operator_context
from traceprobe_operator.daemonset import reconcile_daemonset
from traceprobe_operator.deleting import release_when_allowed, wait_for_detach, waited_seconds
from traceprobe_operator.indexes import (
    NODE_LABELS,
    PROBE_REPORTS,
    NodeLabels,
    ProbeReports,
    nodes_of,
    reports_on,
)
from traceprobe_operator.kube import Kube, describe
from traceprobe_operator.node_reports import (
    ProbeKey,
    probe_states,
    reported_probes,
    selected_nodes,
)
from traceprobe_operator.probe_status import summarise
from traceprobe_operator.retries import ApiBackoffs, ProbeState
from traceprobe_operator.settings import OperatorSettings
from traceprobe_operator.storage import (
    GenerationDiffBase,
    MemoryProgressStorage,
    legacy_annotations,
)

FINALIZER = objects.FINALIZER
STATUS_REFRESH_SECONDS = 5.0
# In a NodeReport's own memo: the state of each probe it reported last time.
SEEN_STATES = "traceprobe.seen-states"
# kopf's state for probes, in this process (see traceprobe_operator.storage).
DIFF_BASE = GenerationDiffBase()
PROGRESS = MemoryProgressStorage()
log = logging.getLogger("traceprobe.operator")


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
    # Nothing in annotations: a probe near the API server's size limits must still fit.
    settings.persistence.progress_storage = PROGRESS
    settings.persistence.diffbase_storage = DIFF_BASE
    settings.peering.name = "traceprobe"
    settings.peering.mandatory = True
    # Equal priorities freeze every replica; distinct ones make exactly one active
    # and let a standby take over when the active one's peering entry expires.
    settings.peering.priority = seniority_priority()
    # A replica killed without goodbye (SIGKILL, node loss) blocks the others until
    # its entry expires: 20 s instead of kopf's 60 s bounds that takeover.
    settings.peering.lifetime = 20
    settings.posting.level = logging.INFO
    settings.networking.error_backoffs = ApiBackoffs()
    if MEMO_KEY in memo:  # __main__ checked the settings and kubeconfig and built it
        return
    try:
        memo[MEMO_KEY] = OperatorContext(OperatorSettings.from_env(), Kube())
    except (ValueError, KubeconfigError) as exc:  # no retry can mend either
        raise kopf.PermanentError(str(exc)) from exc


_key = objects.key


def _indexes(kwargs: Mapping[str, Any]) -> tuple[NodeLabels, ProbeReports]:
    """The indexes kopf passes to every resource handler, each as the keyword
    argument named by its id (looked up here because kopf's handler signatures
    do not declare them)."""
    return kwargs[NODE_LABELS], kwargs[PROBE_REPORTS]


async def _drop_legacy_annotations(ctx: OperatorContext, body: kopf.Body,
                                   logger: kopf.Logger, state: ProbeState) -> None:
    """Once per process and probe: remove what earlier versions' kopf storages left."""
    if state.legacy_checked:
        return
    state.legacy_checked = True
    keys = legacy_annotations(body)
    if not keys:
        return
    try:
        await asyncio.to_thread(ctx.kube.remove_annotations, *objects.key(body), keys)
    except Exception as exc:  # harmless leftovers: said, not retried
        logger.info(f"could not drop the annotations earlier versions left "
                    f"({', '.join(keys)}): {describe(exc)}")
        return
    logger.info(f"dropped the annotations earlier versions left: {', '.join(keys)}")


async def _on_spec(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    ctx, state = operator_context(memo), probe_state(memo)
    async with accept_lock(memo):
        now = time.monotonic()
        try:
            await accept(ctx, body, logger, state, now)
        except Exception as exc:  # said once here; the timer retries
            delay = state.backoff.failed(now)
            state.said.new("accept", describe(exc))
            raise kopf.PermanentError(f"{describe(exc)}; the status timer tries again in "
                                      f"{delay:.0f}s, less often after") from None
    await _drop_legacy_annotations(ctx, body, logger, state)


async def _refresh_status(ctx: OperatorContext, body: kopf.Body,
                          indexes: tuple[NodeLabels, ProbeReports]) -> None:
    key = kind, namespace, name = objects.key(body)
    if (objects.condition(body, "Accepted") or {}).get("status") == "False":
        return
    generation = objects.generation(body)
    # Both indexes are read here, before the first await: one consistent view.
    nodes_index, reports_index = indexes
    nodes = selected_nodes(nodes_of(nodes_index), (body.get("spec") or {}).get("nodeSelector"))
    states = probe_states(reports_on(reports_index, key), datetime.now(UTC))
    stale_after = ctx.settings.report_stale_seconds
    flipped: list[dict[str, Any]] = []

    def refresh(status: dict[str, Any]) -> dict[str, Any]:
        accepted = find_condition(status.get("conditions"), "Accepted") or {}
        if accepted.get("status") == "False":  # its Ready says why it is not deployed
            return status
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


async def _on_timer(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo,
                   **kwargs: Any) -> None:
    """Every few seconds: what kopf's handlers could not finish (the finalizer, an
    acceptance), then the status from the indexes."""
    ctx, state = operator_context(memo), probe_state(memo)
    now = time.monotonic()
    if objects.deleting(body):  # the delete handler has it (kopf stops timers soon)
        return
    try:
        if FINALIZER not in objects.finalizers(body):
            if state.backoff.due(now):
                await add_finalizer(ctx, body, logger, state, now)
            return
        if accept_due(body, state, now):
            async with accept_lock(memo):
                fresh = await asyncio.to_thread(ctx.kube.get_probe, *objects.key(body))
                if fresh and not objects.deleting(fresh) and accept_due(fresh, state, now):
                    await recheck(ctx, fresh, logger, state, now)
                    if state.said.clear("accept"):
                        logger.info("accepting works again")
        await _refresh_status(ctx, body, _indexes(kwargs))
        if state.said.clear("timer"):
            logger.info("the API calls that failed before work again")
    except Exception as exc:  # said once, retried with backoff
        delay = state.backoff.failed(now)
        text = describe(exc)
        if state.said.new("timer", text):
            logger.warning(f"{text}; trying again in {delay:.0f}s, less often after")
            kopf.warn(body, reason="ReconcileFailed", message=text)


async def _on_delete(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo,
                     **kwargs: Any) -> None:
    """Hold the finalizer until agents report the probe detached, or time out."""
    ctx = operator_context(memo)
    key = kind, namespace, name = objects.key(body)
    now = datetime.now(UTC)
    _, reports_index = _indexes(kwargs)
    states = probe_states(reports_on(reports_index, key), now)
    attached = sorted(n for n, s in states.items() if s.state != "Detached"
                      and s.heartbeat_age_seconds <= ctx.settings.report_stale_seconds)
    waited = waited_seconds(body, now)
    timeout = ctx.settings.detach_timeout_seconds
    if attached and waited < timeout:
        generation = objects.generation(body)
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


async def _on_deleting(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo,
                       **kwargs: Any) -> None:
    """kopf's on.delete: wait (inside, so kopf never needs a wake-up write) for the
    agents, then until the API server would let the finalizer go."""
    ctx = operator_context(memo)
    await wait_for_detach(ctx, body, logger, lambda: _on_delete(
        body=body, logger=logger, memo=memo, **kwargs))
    await release_when_allowed(ctx, body, logger)
    DIFF_BASE.forget(body)


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
        try:
            obj = await asyncio.to_thread(ctx.kube.get_probe, kind, namespace, name)
            if obj and not objects.deleting(obj):
                await _refresh_status(ctx, kopf.Body(cast(kopf.RawBody, obj)),
                                      _indexes(kwargs))
        except Exception as exc:  # the probe's timer refreshes it anyway
            log.warning(f"could not refresh {objects.describe_key((kind, namespace, name))} "
                        f"after a node report: {describe(exc)}")


def _register_probe_handlers() -> None:
    # Explicit ids: the logs name them, and earlier versions keyed annotations by them.
    for plural in PROBE_PLURALS.values():
        kopf.on.create(API_GROUP, API_VERSION, plural, id="accept")(_on_spec)
        kopf.on.update(API_GROUP, API_VERSION, plural, field="spec", id="accept")(_on_spec)
        kopf.on.resume(API_GROUP, API_VERSION, plural, id="accept")(_on_spec)
        kopf.timer(API_GROUP, API_VERSION, plural, interval=STATUS_REFRESH_SECONDS,
                   initial_delay=1.0, id="status")(_on_timer)
        kopf.on.delete(API_GROUP, API_VERSION, plural, id="detach")(_on_deleting)


_register_probe_handlers()
