"""Accepting a probe: spec checked, agents placed, Accepted written.

kopf's create/update/resume handler accepts each generation once; the status timer
accepts again what is still open (a probe the API server would not let us update,
a write that failed), with a bounded backoff.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from traceprobe_operator import objects
from traceprobe_operator.conditions import find_condition, set_condition
from traceprobe_operator.context import OperatorContext
from traceprobe_operator.daemonset import reconcile_daemonset
from traceprobe_operator.kube import describe, refused
from traceprobe_operator.retries import ProbeState
from traceprobe_operator.validation import Problem, probe_problem

#: Reasons of an Accepted=False that may clear without a spec change: checked again.
RECHECKED = frozenset({"UpdateRefused"})
#: How long a new generation may wait for kopf's handler before the timer accepts it.
HANDLER_GRACE_SECONDS = 10.0
STATE_KEY = "traceprobe.probe-state"
LOCK_KEY = "traceprobe.accept-lock"


def probe_state(memo: kopf.Memo) -> ProbeState:
    found = memo.get(STATE_KEY)
    if not isinstance(found, ProbeState):
        found = memo[STATE_KEY] = ProbeState()
    return found


def accept_lock(memo: kopf.Memo) -> asyncio.Lock:
    """One acceptance of a probe at a time (its handler and its timer share its memo)."""
    found = memo.get(LOCK_KEY)
    if not isinstance(found, asyncio.Lock):
        found = memo[LOCK_KEY] = asyncio.Lock()
    return found


def _record(status: dict[str, Any], generation: int, problem: Problem | None,
            changed: list[bool]) -> dict[str, Any]:
    conditions = list(status.get("conditions") or [])
    before = find_condition(conditions, "Accepted") or {}
    if problem:
        conditions = set_condition(conditions, "Accepted", False, problem.reason,
                                   problem.message, generation)
        conditions = set_condition(conditions, "Ready", False, problem.reason,
                                   f"not deployed: {problem.message}", generation)
    else:
        conditions = set_condition(conditions, "Accepted", True, "Valid", "spec accepted",
                                   generation)
    after = find_condition(conditions, "Accepted") or {}
    changed[:] = [any(before.get(k) != after.get(k)
                      for k in ("status", "reason", "message", "observedGeneration"))]
    return {**status, "observedGeneration": generation, "conditions": conditions}


async def record(ctx: OperatorContext, body: Any, problem: Problem | None) -> None:
    """Write the verdict for `body`'s generation; post an Event when it changed."""
    kind, namespace, name = objects.key(body)
    generation = objects.generation(body)
    changed: list[bool] = []
    await asyncio.to_thread(ctx.kube.update_probe_status, kind, namespace, name,
                            lambda status: _record(status, generation, problem, changed))
    if changed and changed[0]:
        if problem:
            kopf.warn(body, reason=problem.reason, message=problem.message)
        else:
            kopf.info(body, reason="Accepted", message=f"generation {generation} accepted")


def verdict(body: Any) -> Problem | None:
    """What is wrong with the probe's spec, or None."""
    return probe_problem(objects.key(body)[0], body)


def _schedule(state: ProbeState, problem: Problem | None, now: float) -> float | None:
    if problem and problem.reason in RECHECKED:
        return state.backoff.failed(now)
    state.backoff.succeeded()
    return None


async def accept(ctx: OperatorContext, body: Any, logger: kopf.Logger,
                 state: ProbeState, now: float) -> Problem | None:
    """Decide on `body`'s generation, place the agents accordingly, record it.
    Raises what the API calls raise; the caller retries."""
    problem = verdict(body)
    await reconcile_daemonset(ctx, logger, {objects.key(body): problem is None})
    await record(ctx, body, problem)
    delay = _schedule(state, problem, now)
    if problem and delay is not None:
        logger.info(f"{problem.reason}: checking again in {delay:.0f}s")
    return problem


def _unchanged(body: Any, problem: Problem | None) -> bool:
    found = objects.condition(body, "Accepted") or {}
    if found.get("observedGeneration") != objects.generation(body):
        return False
    if problem is None:
        return found.get("status") == "True"
    return (found.get("status"), found.get("reason"), found.get("message")) == (
        "False", problem.reason, problem.message)


async def recheck(ctx: OperatorContext, body: Any, logger: kopf.Logger, state: ProbeState,
                  now: float) -> None:
    """Accept `body` again if its verdict changed; else only schedule the next look."""
    problem = verdict(body)
    if _unchanged(body, problem):
        _schedule(state, problem, now)
    else:
        await accept(ctx, body, logger, state, now)


def accept_due(body: Any, state: ProbeState, now: float) -> bool:
    """Whether the timer should accept `body` now."""
    found = objects.condition(body, "Accepted")
    if found is None or found.get("observedGeneration") != objects.generation(body):
        # kopf's handler normally does it within a second; the timer steps in when it
        # failed or could not run (say while the probe could not be updated).
        if state.pending_since is None:
            state.pending_since = now
        return now - state.pending_since >= HANDLER_GRACE_SECONDS and state.backoff.due(now)
    state.pending_since = None
    return (found.get("status") == "False" and found.get("reason") in RECHECKED
            and state.backoff.due(now))


async def add_finalizer(ctx: OperatorContext, body: Any, logger: kopf.Logger,
                        state: ProbeState, now: float) -> None:
    """Put the finalizer on a probe that lacks it (kopf adds it too, but says nothing
    when the API server refuses: then the probe is reported and not deployed)."""
    kind, namespace, name = objects.key(body)
    version = str(objects.meta(body).get("resourceVersion") or "")
    try:
        await asyncio.to_thread(ctx.kube.set_finalizers, kind, namespace, name, version,
                                [*objects.finalizers(body), objects.FINALIZER])
    except Exception as exc:  # every failure is said and retried later
        if getattr(exc, "status", None) in (404, 409):  # gone, or changed: the next tick
            return
        if not refused(exc):
            state.backoff.failed(now)
            raise
        delay = state.backoff.failed(now)
        problem = Problem("UpdateRefused", "the API server refuses the operator's update of "
                          f"this probe (adding finalizer {objects.FINALIZER}): {describe(exc)}")
        if state.said.new("finalizer", problem.message):
            logger.warning(f"{problem.message}; not deployed, trying again in {delay:.0f}s "
                           "and less often after")
            await reconcile_daemonset(ctx, logger, {objects.key(body): False})
            await record(ctx, body, problem)
        return
    state.backoff.succeeded()
    state.pending_since = None
    if state.said.clear("finalizer"):
        logger.info(f"finalizer {objects.FINALIZER} added: the API server allows it now")
