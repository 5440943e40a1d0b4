from __future__ import annotations

from typing import Any

from traceprobe_operator.probe_status import NodeProbeState, summarise


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in status["conditions"] if c["type"] == type_]
    assert len(found) == 1, status["conditions"]
    return found[0]


def test_all_nodes_attached_is_ready() -> None:
    reports = {n: NodeProbeState(n, "Attached", 3) for n in ("a", "b")}
    status = summarise(3, ["a", "b"], reports, [], stale_after=90, now="T")
    assert status["nodes"] == {"desired": 2, "ready": 2, "failed": 0}
    assert status["nodesReady"] == "2/2" and status["observedGeneration"] == 3
    assert _cond(status, "Ready")["status"] == "True"
    assert _cond(status, "Degraded")["status"] == "False"


def test_failures_stale_and_old_generations_are_explained() -> None:
    reports = {
        "a": NodeProbeState("a", "Attached", 2),
        "b": NodeProbeState("b", "Attached", 1),  # still on the old spec
        "c": NodeProbeState("c", "Failed", 2, "HeadersMissing", "no kernel headers found"),
        "d": NodeProbeState("d", "Attached", 2, heartbeat_age_seconds=300),
    }
    status = summarise(2, ["a", "b", "c", "d", "e"], reports, [], stale_after=90, now="T")
    assert status["nodes"] == {"desired": 5, "ready": 1, "failed": 2}
    ready = _cond(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NodesFailed")
    for text in ("1/5 nodes ready", "c: HeadersMissing: no kernel headers found",
                 "d: AgentNotReporting", "b: Applying generation 2", "e: AgentNotReported"):
        assert text in ready["message"]


def test_degraded_node_counts_ready_but_sets_degraded() -> None:
    reports = {"a": NodeProbeState("a", "Degraded", 1, "TracepointMissing",
                                   "tcp:tcp_probe absent: no RTT")}
    status = summarise(1, ["a"], reports, [], stale_after=90, now="T")
    assert _cond(status, "Ready")["status"] == "True"
    degraded = _cond(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "NodesDegraded")
    assert "tcp:tcp_probe absent" in degraded["message"]


def test_no_matching_nodes_and_long_lists_are_capped() -> None:
    status = summarise(1, [], {}, [], stale_after=90, now="T")
    assert _cond(status, "Ready")["reason"] == "NoMatchingNodes"
    many = summarise(1, [f"n{i:02}" for i in range(20)], {}, [], stale_after=90, now="T")
    assert "and 15 more" in _cond(many, "Ready")["message"]
