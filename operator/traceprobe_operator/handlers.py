"""kopf handlers: thin glue between watch events and the pure decision modules."""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import kopf

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_operator.agent_workload import ActiveProbe, render_daemonset
from traceprobe_operator.conditions import set_condition
from traceprobe_operator.kube import Kube
from traceprobe_operator.node_reports import probe_states, selected_nodes
from traceprobe_operator.probe_status import summarise
from traceprobe_operator.settings import OperatorSettings
from traceprobe_operator.validation import spec_problem

FINALIZER = "traceprobe.io/agents-detached"
KINDS = ("traceprobes", "clustertraceprobes")
STATUS_REFRESH_SECONDS = 5.0

_settings = OperatorSettings.from_env()
_kube: Kube | None = None
_daemonset_lock = threading.Lock()  # handlers run in threads; one DaemonSet writer at a time
log = logging.getLogger("traceprobe.operator")


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube()
    return _kube


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Handler progress in annotations keeps `status` ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="traceprobe.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="traceprobe.io")
    settings.peering.name = "traceprobe"
    settings.peering.mandatory = True
    # Equal priorities freeze every replica; a random one makes exactly one active
    # and lets a standby take over when the active one's peering entry expires.
    settings.peering.priority = random.randint(1, 1_000_000)
    # A replica killed without goodbye (SIGKILL, node loss) blocks the others until
    # its entry expires: 20 s instead of kopf's 60 s bounds that takeover.
    settings.peering.lifetime = 20
    settings.posting.level = logging.INFO


def _kind(body: Any) -> str:
    return str(body.get("kind") or "TraceProbe")


def reconcile_daemonset(logger: Any) -> None:
    """Make the agent DaemonSet match the set of live probes (or remove it)."""
    with _daemonset_lock:
        active = [ActiveProbe(_kind(p), p["metadata"].get("namespace"), p["metadata"]["name"],
                              dict(p.get("spec", {}).get("nodeSelector") or {}))
                  for p in kube().list_probes()
                  if not p["metadata"].get("deletionTimestamp")
                  and spec_problem(_kind(p), p) is None]
        if not active:
            if kube().delete_daemonset(_settings.agent_daemonset, _settings.namespace):
                logger.info("no probe needs agents: agent DaemonSet removed")
            return
        outcome = kube().apply_daemonset(render_daemonset(_settings, active))
        if outcome != "unchanged":
            logger.info(f"agent DaemonSet {outcome} for {len(active)} probe(s)")


def _on_spec(body: Any, meta: Any, logger: Any, **_: Any) -> None:
    generation = int(meta.get("generation") or 1)
    problem = spec_problem(_kind(body), body)

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

    kube().update_probe_status(_kind(body), meta.get("namespace"), meta["name"], accept)
    if problem:
        kopf.warn(body, reason="InvalidSpec", message=problem)
    else:
        kopf.info(body, reason="Accepted", message=f"generation {generation} accepted")
    reconcile_daemonset(logger)


def _refresh_status(body: Any, meta: Any, spec: Any, **_: Any) -> None:
    if spec_problem(_kind(body), body):
        return
    generation = int(meta.get("generation") or 1)
    all_nodes, reports = _cluster_snapshot()
    nodes = selected_nodes(all_nodes, spec.get("nodeSelector"))
    states = probe_states(reports, _kind(body), meta.get("namespace"),
                          meta["name"], datetime.now(UTC))
    flipped: list[dict[str, Any]] = []

    def refresh(status: dict[str, Any]) -> dict[str, Any]:
        old = list(status.get("conditions") or [])
        new = summarise(generation, nodes, states, old, _settings.report_stale_seconds)
        before: dict[str, Any] = next((c for c in old if c["type"] == "Ready"), {})
        after = next(c for c in new["conditions"] if c["type"] == "Ready")
        flipped[:] = [after] if before.get("status") != after["status"] else []
        return {**status, **new}

    kube().update_probe_status(_kind(body), meta.get("namespace"), meta["name"], refresh)
    for ready in flipped:  # an Event only when Ready changes, not every refresh
        emit = kopf.info if ready["status"] == "True" else kopf.warn
        emit(body, reason=ready["reason"], message=ready["message"])


_snapshot: tuple[float, list[tuple[str, dict[str, str]]], list[dict[str, Any]]] | None = None
_snapshot_lock = threading.Lock()


def _cluster_snapshot() -> tuple[list[tuple[str, dict[str, str]]], list[dict[str, Any]]]:
    """Nodes and NodeReports, listed once per half refresh period and shared by
    every probe's status timer (not two LISTs per probe per tick)."""
    global _snapshot
    with _snapshot_lock:
        if _snapshot is None or time.monotonic() - _snapshot[0] > STATUS_REFRESH_SECONDS / 2:
            _snapshot = (time.monotonic(), kube().list_nodes(), kube().list_node_reports())
        return _snapshot[1], _snapshot[2]


def _on_delete(body: Any, meta: Any, logger: Any, **_: Any) -> None:
    """Hold the finalizer until agents report the probe detached, or time out."""
    states = probe_states(kube().list_node_reports(), _kind(body), meta.get("namespace"),
                          meta["name"], datetime.now(UTC))
    attached = sorted(n for n, s in states.items() if s.state != "Detached"
                      and s.heartbeat_age_seconds <= _settings.report_stale_seconds)
    deleted_at = meta.get("deletionTimestamp")
    waited = (datetime.now(UTC) - datetime.fromisoformat(
        str(deleted_at).replace("Z", "+00:00"))).total_seconds() if deleted_at else 0.0
    if attached and waited < _settings.detach_timeout_seconds:
        generation = int(meta.get("generation") or 1)
        message = f"waiting for {len(attached)} agent(s) to detach: {', '.join(attached[:5])}"

        def detaching(status: dict[str, Any]) -> dict[str, Any]:
            return {**status, "conditions": set_condition(
                list(status.get("conditions") or []), "Ready", False, "Detaching",
                message, generation)}

        kube().update_probe_status(_kind(body), meta.get("namespace"), meta["name"], detaching)
        raise kopf.TemporaryError(f"agents still attached on {', '.join(attached[:5])}",
                                  delay=2)
    if attached:
        kopf.warn(body, reason="DetachTimeout",
                  message=f"agents on {', '.join(attached[:5])} did not report detaching "
                          f"within {_settings.detach_timeout_seconds:.0f}s; deleting anyway")
    reconcile_daemonset(logger)


_seen_states: dict[tuple[str, str, str | None, str], str] = {}


@kopf.on.event(API_GROUP, API_VERSION, "nodereports")
def _on_report(body: Any, type: str | None, **_: Any) -> None:
    """A probe's state changed on some node: refresh that probe's status now, not
    at its next timer tick (apply -> Ready in about a second, not about six).
    Heartbeats that change no state cost nothing here."""
    global _snapshot
    node = str((body.get("metadata") or {}).get("name", ""))
    changed = []
    for entry in (body.get("status") or {}).get("probes") or []:
        ref = entry.get("probe") or {}
        key = (node, str(ref.get("kind", "")), ref.get("namespace"), str(ref.get("name", "")))
        state = "" if type == "DELETED" else str(entry.get("state", ""))
        if _seen_states.get(key) != state:
            _seen_states[key] = state
            changed.append(key)
    if not changed:
        return
    with _snapshot_lock:
        _snapshot = None  # the refresh below must see this report
    for _node, kind, namespace, name in changed:
        obj = kube().get_probe(kind, namespace, name)
        if obj and not (obj.get("metadata") or {}).get("deletionTimestamp"):
            _refresh_status(obj, obj["metadata"], obj.get("spec") or {})


# Explicit ids: kopf keeps handler progress in annotations named after them.
for _plural in KINDS:
    kopf.on.create(API_GROUP, API_VERSION, _plural, id="accept")(_on_spec)
    kopf.on.update(API_GROUP, API_VERSION, _plural, field="spec", id="accept")(_on_spec)
    kopf.on.resume(API_GROUP, API_VERSION, _plural, id="accept")(_on_spec)
    kopf.timer(API_GROUP, API_VERSION, _plural, interval=STATUS_REFRESH_SECONDS,
               initial_delay=1.0, id="status")(_refresh_status)
    kopf.on.delete(API_GROUP, API_VERSION, _plural, id="detach")(_on_delete)
