"""NodeReports and Nodes as the operator's kopf indexes hold them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kopf._core.engines.indexing import OperatorIndexer

from traceprobe_operator.indexes import nodes_of, reports_on
from traceprobe_operator.node_reports import (
    ReportedProbe,
    probe_states,
    reported_probes,
    selected_nodes,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
WEB = ("TraceProbe", "shop", "web")


def report(node: str, *entries: tuple[str, str], heartbeat: datetime | None = NOW,
           kind: str = "TraceProbe", namespace: str | None = "shop") -> dict[str, Any]:
    ref = {"kind": kind, **({"namespace": namespace} if namespace else {}), "generation": 2}
    status: dict[str, Any] = {"probes": [{"probe": {**ref, "name": name}, "state": state}
                                         for name, state in entries]}
    if heartbeat:
        status["heartbeatTime"] = heartbeat.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": "traceprobe.io/v1alpha1", "kind": "NodeReport",
            "metadata": {"name": node, "uid": f"uid-{node}"}, "spec": {"nodeName": node},
            "status": status}


def test_a_report_yields_one_entry_per_probe_keyed_by_the_probe() -> None:
    entries = reported_probes(report("n1", ("web", "Attached"), ("db", "Failed")))
    assert entries[WEB] == ReportedProbe("n1", "Attached", 2, "", "", NOW)
    assert entries[("TraceProbe", "shop", "db")].state == "Failed"
    cluster = reported_probes(report("n1", ("all", "Degraded"), kind="ClusterTraceProbe",
                                     namespace=None))
    assert set(cluster) == {("ClusterTraceProbe", None, "all")}


def test_malformed_or_statusless_reports_yield_nothing() -> None:
    bad = report("n1", ("web", "Exploded"))
    assert reported_probes(bad) == {}
    assert reported_probes({**report("n1"), "status": None}) == {}


def test_states_carry_heartbeat_ages() -> None:
    reported = [*reported_probes(report("n1", ("web", "Attached"))).values(),
                *reported_probes(report("n2", ("web", "Attached"), heartbeat=None)).values()]
    states = probe_states(reported, NOW + timedelta(seconds=30))
    assert states["n1"].heartbeat_age_seconds == 30
    assert states["n2"].heartbeat_age_seconds == float("inf")
    assert (states["n1"].state, states["n1"].applied_generation) == ("Attached", 2)


def test_selected_nodes_match_every_selector_pair() -> None:
    nodes = [("b", {"pool": "web", "zone": "z1"}), ("a", {"pool": "web"}), ("c", {})]
    assert selected_nodes(nodes, {"pool": "web"}) == ["a", "b"]
    assert selected_nodes(nodes, {"pool": "web", "zone": "z1"}) == ["b"]
    assert selected_nodes(nodes, None) == ["a", "b", "c"]


def _index(indexer: OperatorIndexer, raw: dict[str, Any]) -> None:
    # What kopf does with an indexing function's result for one object.
    meta = raw["metadata"]
    indexer.replace((meta.get("namespace"), meta["name"], meta["uid"]), reported_probes(raw))


def test_kopf_index_gathers_all_nodes_per_probe_and_drops_a_report_gone_bad() -> None:
    indexer = OperatorIndexer()
    _index(indexer, report("n1", ("web", "Attached")))
    _index(indexer, report("n2", ("web", "Failed"), ("db", "Attached")))
    assert sorted(r.node for r in reports_on(indexer.index, WEB)) == ["n1", "n2"]
    _index(indexer, report("n2", ("web", "Exploded")))  # malformed now: its entries go
    assert [r.node for r in reports_on(indexer.index, WEB)] == ["n1"]
    assert reports_on(indexer.index, ("TraceProbe", "shop", "db")) == []
    indexer.discard((None, "n1", "uid-n1"))  # a DELETED event
    assert reports_on(indexer.index, WEB) == []


def test_nodes_of_a_node_index() -> None:
    indexer = OperatorIndexer()
    indexer.replace((None, "n1", "u1"), {"n1": {"pool": "web"}})
    indexer.replace((None, "n2", "u2"), {"n2": {}})
    assert sorted(nodes_of(indexer.index)) == [("n1", {"pool": "web"}), ("n2", {})]
