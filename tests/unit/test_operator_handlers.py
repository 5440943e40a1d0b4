"""The handlers' glue, driven the way kopf drives it: each NodeReport event is
indexed first, then handed to the handler with that object's own memo."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
import pytest
from kopf._core.engines import posting
from kopf._core.engines.indexing import OperatorIndexer

from traceprobe_operator import handlers
from traceprobe_operator.context import MEMO_KEY, OperatorContext
from traceprobe_operator.indexes import NODE_LABELS, PROBE_REPORTS
from traceprobe_operator.kube import Kube
from traceprobe_operator.node_reports import ProbeKey, reported_probes
from traceprobe_operator.settings import OperatorSettings

WEB: ProbeKey = ("TraceProbe", "shop", "web")
log = logging.getLogger("test")


def report(node: str, *entries: tuple[str, str],
           heartbeat: datetime | None = None) -> dict[str, Any]:
    beat = (heartbeat or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": "traceprobe.io/v1alpha1", "kind": "NodeReport",
            "metadata": {"name": node, "uid": f"uid-{node}"}, "spec": {"nodeName": node},
            "status": {"heartbeatTime": beat, "probes": [
                {"probe": {"kind": "TraceProbe", "namespace": "shop", "name": name,
                           "generation": 2}, "state": state} for name, state in entries]}}


class FakeKube(Kube):
    def __init__(self, probes: dict[ProbeKey, dict[str, Any]]) -> None:  # no API client
        self.probes = probes
        self.status: dict[ProbeKey, dict[str, Any]] = {}
        self.writes: list[ProbeKey] = []

    def get_probe(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.probes.get((kind, namespace, name))

    def update_probe_status(self, kind: str, namespace: str | None, name: str,
                            mutate: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.writes.append((kind, namespace, name))
        self.status[(kind, namespace, name)] = mutate(dict(self.status.get(
            (kind, namespace, name), {})))

    def list_probes(self) -> list[dict[str, Any]]:
        return list(self.probes.values())

    def apply_daemonset(self, manifest: dict[str, Any]) -> str:
        return "created"

    def delete_daemonset(self, name: str, namespace: str) -> bool:
        return True


def probe(name: str, deleted_ago: timedelta | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "generation": 2}
    if deleted_ago is not None:
        meta["deletionTimestamp"] = (datetime.now(UTC) - deleted_ago).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": "traceprobe.io/v1alpha1", "kind": "TraceProbe", "metadata": meta,
            "spec": {"nodeSelector": {"pool": "web"}}}


class Operator:
    """kopf's part: indexes, one memo per object, the order of indexing and handling."""

    def __init__(self, probes: list[dict[str, Any]]) -> None:
        self.kube = FakeKube({handlers._key(p): p for p in probes})
        self.memo = kopf.Memo({MEMO_KEY: OperatorContext(
            OperatorSettings(detach_timeout_seconds=60), self.kube)})
        self.nodes, self.reports = OperatorIndexer(), OperatorIndexer()
        self.nodes.replace((None, "n1", "u1"), {"n1": {"pool": "web"}})
        self.object_memos: dict[str, kopf.Memo] = {}
        self.events: list[str] = []  # reasons of the Kubernetes Events posted

    def run(self, coro: Coroutine[Any, Any, None]) -> None:
        async def posting_to_a_list() -> None:
            queue: asyncio.Queue[posting.K8sEvent] = asyncio.Queue()
            posting.settings_var.set(kopf.OperatorSettings())
            posting.event_queue_var.set(queue)
            posting.event_queue_loop_var.set(asyncio.get_running_loop())
            try:
                await coro
            finally:
                while not queue.empty():
                    self.events.append(queue.get_nowait().reason)

        asyncio.run(posting_to_a_list())

    def kwargs(self) -> dict[str, Any]:
        return {NODE_LABELS: self.nodes.index, PROBE_REPORTS: self.reports.index}

    def report_event(self, raw: dict[str, Any], type: str | None = "MODIFIED") -> None:
        key = (None, raw["metadata"]["name"], raw["metadata"]["uid"])
        if type == "DELETED":
            self.reports.discard(key)
        else:
            self.reports.replace(key, reported_probes(raw))
        memo = self.object_memos.setdefault(key[2], copy.copy(self.memo))
        # kopf's handler protocol says `type: str`, yet listed objects come with None.
        self.run(handlers._on_report(body=kopf.Body(raw),  # type: ignore[arg-type]
                                     type=cast(str, type), memo=memo, **self.kwargs()))

    def ready(self, key: ProbeKey = WEB) -> dict[str, Any]:
        return next(c for c in self.kube.status[key]["conditions"] if c["type"] == "Ready")


def test_report_events_refresh_a_probe_only_when_its_state_changes() -> None:
    op = Operator([probe("web")])
    op.report_event(report("n1", ("web", "Attached")), type=None)  # listed at start
    assert op.kube.writes == [WEB] and op.ready()["status"] == "True"
    op.report_event(report("n1", ("web", "Attached")))  # a heartbeat
    assert op.kube.writes == [WEB]
    op.report_event(report("n1", ("web", "Failed")))
    assert op.kube.writes == [WEB, WEB] and op.ready()["reason"] == "NodesFailed"
    assert op.events == ["AllNodesReady", "NodesFailed"]  # one per flip of Ready
    op.report_event(report("n1"))  # the entry is gone: the probe is pending again
    assert op.ready()["reason"] == "NodesPending"
    op.report_event(report("n1", ("web", "Attached")))
    op.report_event(report("n1", ("web", "Attached")), type="DELETED")
    assert len(op.kube.writes) == 5 and op.ready()["reason"] == "NodesPending"


def test_reports_on_a_probe_being_deleted_or_gone_write_nothing() -> None:
    op = Operator([probe("web", deleted_ago=timedelta(0))])
    op.report_event(report("n1", ("web", "Attached"), ("other", "Attached")))
    assert op.kube.writes == []


def _delete(op: Operator) -> Coroutine[Any, Any, None]:
    body = kopf.Body(op.kube.probes[WEB])  # type: ignore[arg-type]
    return handlers._on_delete(body=body, logger=log, memo=op.memo, **op.kwargs())


def test_delete_waits_for_fresh_attached_agents_only() -> None:
    op = Operator([probe("web", deleted_ago=timedelta(0))])

    def delete() -> Coroutine[Any, Any, None]:
        return _delete(op)

    op.report_event(report("n1", ("web", "Attached")))
    with pytest.raises(kopf.TemporaryError, match="n1"):
        op.run(delete())
    assert op.ready()["reason"] == "Detaching"
    op.report_event(report("n1", ("web", "Attached"),
                           heartbeat=datetime.now(UTC) - timedelta(hours=1)))  # agent dead
    op.run(delete())  # no longer waits
    op.report_event(report("n1", ("web", "Detached")))
    op.run(delete())
    assert "DetachTimeout" not in op.events


def test_delete_gives_up_waiting_after_the_timeout_with_a_warning() -> None:
    op = Operator([probe("web", deleted_ago=timedelta(seconds=61))])
    op.report_event(report("n1", ("web", "Attached")))
    op.run(_delete(op))
    assert op.events[-1] == "DetachTimeout"


def test_a_later_replica_gets_a_lower_peering_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_000_000_000)
    first = [handlers.seniority_priority() for _ in range(50)]
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_001_000_000)  # +1 ms
    later = [handlers.seniority_priority() for _ in range(50)]
    assert max(later) < min(first)
    assert abs(min(later)) < 2 ** 53  # exact in every JSON reader of the peering object
