"""Which local processes the probes observe: the verdicts the kernel map and the
drain apply (traceprobe_agent.scope)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from traceprobe_agent.node_config import probe_view
from traceprobe_agent.pod_index import PodIndex, pod_info
from traceprobe_agent.scope import Scope, Selection, Verdict
from traceprobe_api.records import ConnectionRecord, Role

WEB, OTHER, ELSEWHERE, HOSTNET = (f"{n}f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b" for n in "1234")


def _pod(uid: str, namespace: str, labels: dict[str, str], ip: str,
         host_network: bool = False) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "namespace": namespace, "name": f"p-{uid[:1]}",
                         "labels": labels},
            "spec": {"hostNetwork": host_network}, "status": {"podIP": ip}}


def _index() -> PodIndex:
    index = PodIndex()
    for obj in (_pod(WEB, "shop", {"app": "web"}, "10.0.0.1"),
                _pod(OTHER, "shop", {"app": "other"}, "10.0.0.2"),
                _pod(ELSEWHERE, "lab", {"app": "web"}, "10.0.0.3"),
                _pod(HOSTNET, "shop", {"app": "web"}, "192.168.1.5", host_network=True)):
        index.upsert(pod_info(obj))
    return index


def _probe(kind: str, spec: dict[str, Any], namespace: str | None = "shop") -> Any:
    meta: dict[str, Any] = {"name": "p"} | ({"namespace": namespace} if namespace else {})
    return probe_view({"kind": kind, "metadata": meta, "spec": spec})


def _path(uid: str) -> str:
    return f"/kubepods/besteffort/pod{uid}/c0ffee"


def _record(path: str | None, cgroup_id: int = 7, local_ip: str | None = None
            ) -> ConnectionRecord:
    now = datetime.now(UTC)
    return ConnectionRecord(node="n", role=Role.CLIENT, transport="tcp", family="ipv4",
                            cgroup_path=path, cgroup_id=cgroup_id, local_ip=local_ip,
                            interval_start=now, interval_end=now)


def test_a_namespaced_probe_observes_its_namespace_and_selector_only() -> None:
    selection = Selection(_index())
    selection.update(Scope((_probe("TraceProbe", {"podSelector": {
        "matchLabels": {"app": "web"}}}),)))
    assert selection.of_path(_path(WEB)) is Verdict.TRACE
    assert selection.of_path(_path(OTHER)) is Verdict.SKIP  # its namespace, not selected
    assert selection.of_path(_path(ELSEWHERE)) is Verdict.SKIP  # same labels, other namespace
    assert selection.of_path(_path(HOSTNET)) is Verdict.TRACE  # hostNetwork pods too
    assert selection.of_path("/system.slice/kubelet.service") is Verdict.SKIP


def test_a_cluster_probe_selects_namespaces_by_label_and_hosts_on_request() -> None:
    probe = _probe("ClusterTraceProbe", {"namespaceSelector": {
        "matchLabels": {"team": "lab"}}}, namespace=None)
    selection = Selection(_index())
    selection.update(Scope((probe,), {"shop": {}, "lab": {"team": "lab"}}))
    assert selection.of_path(_path(ELSEWHERE)) is Verdict.TRACE
    assert selection.of_path(_path(WEB)) is Verdict.SKIP
    assert selection.of_path("/system.slice/sshd.service") is Verdict.SKIP
    by_name = _probe("ClusterTraceProbe", {"hostProcesses": True, "namespaceSelector": {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                              "values": ["shop"]}]}}, namespace=None)
    selection.update(Scope((by_name,), {"shop": {}, "lab": {"team": "lab"}}))
    assert selection.of_path(_path(WEB)) is Verdict.TRACE  # the name label is implied
    assert selection.of_path(_path(ELSEWHERE)) is Verdict.SKIP
    assert selection.of_path("/system.slice/sshd.service") is Verdict.TRACE


def test_host_processes_is_not_a_namespaced_probes_to_ask_for() -> None:
    probe = _probe("TraceProbe", {"hostProcesses": True})
    assert probe.host_processes is False
    assert Scope((probe,)).of_host() is Verdict.SKIP


def test_unknown_pods_and_namespaces_wait_and_are_then_dropped() -> None:
    stranger = "9f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
    probe = _probe("ClusterTraceProbe", {"namespaceSelector": {
        "matchLabels": {"team": "lab"}}}, namespace=None)
    selection = Selection(_index())
    selection.update(Scope((probe,), {}))  # no namespace listed yet
    assert selection.of_path(_path(ELSEWHERE)) is Verdict.PENDING
    assert selection.of_path(_path(stranger)) is Verdict.PENDING
    waiting = [_record(_path(stranger)), _record(_path(ELSEWHERE))]
    assert len(selection.keep(waiting)) == 2
    assert selection.keep(waiting, final=True) == []
    assert (selection.skipped_records, selection.undecided_records) == (0, 2)
    assert selection.kernel_verdicts([(1, _path(stranger)), (2, "/init.scope")]) == {
        2: int(Verdict.SKIP)}  # the kernel counts what is undecided


def test_a_record_whose_cgroup_went_unnamed_is_known_by_its_pod_address() -> None:
    index = _index()
    selection = Selection(index)
    selection.update(Scope((_probe("TraceProbe", {"podSelector": {
        "matchLabels": {"app": "web"}}}),)))
    assert selection.of_record(_record(None, local_ip="10.0.0.1")) is Verdict.TRACE
    assert selection.of_record(_record(None, local_ip="10.0.0.2")) is Verdict.SKIP
    named = index.enrich(_record(None, local_ip="10.0.0.1"))
    assert named.k8s_pod_uid == WEB and not index.awaited(named)
    # A hostNetwork pod's address is the node's: it names no pod.
    assert index.by_ip("192.168.1.5") is None
    unknown = _record(None, local_ip="10.9.9.9")
    assert index.awaited(unknown)
    assert selection.of_record(unknown) is Verdict.PENDING
    assert selection.of_record(unknown, final=True) is Verdict.SKIP  # the node's, unselected
    assert selection.of_record(_record(None, cgroup_id=0, local_ip="10.9.9.9")) is Verdict.SKIP


def test_a_reused_pod_address_is_the_newer_pods() -> None:
    index = _index()
    index.delete(WEB, now=0)
    newer = "5f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
    index.upsert(pod_info(_pod(newer, "shop", {"app": "x"}, "10.0.0.1")))
    assert index.by_ip("10.0.0.1").uid == newer  # type: ignore[union-attr]
    index.expire(now=1000)
    assert index.by_ip("10.0.0.1").uid == newer  # type: ignore[union-attr]


def test_verdicts_follow_probe_and_pod_changes() -> None:
    index = _index()
    selection = Selection(index)
    narrow = Scope((_probe("TraceProbe", {"podSelector": {"matchLabels": {"app": "web"}}}),))
    selection.update(narrow)
    assert selection.of_path(_path(OTHER)) is Verdict.SKIP
    selection.update(Scope((*narrow.probes, _probe("TraceProbe", {}))))  # a second probe
    assert selection.of_path(_path(OTHER)) is Verdict.TRACE
    selection.update(narrow)
    index.upsert(pod_info(_pod(OTHER, "shop", {"app": "web"}, "10.0.0.2")))  # relabelled
    assert selection.of_path(_path(OTHER)) is Verdict.TRACE
    selection.update(Scope())
    assert selection.of_path(_path(WEB)) is Verdict.SKIP


def test_another_simulated_nodes_cgroups_are_skipped() -> None:
    selection = Selection(_index(), cgroup_root="/tp/node-a")
    selection.update(Scope((_probe("ClusterTraceProbe", {"hostProcesses": True},
                                   namespace=None),)))
    assert selection.of_path("/tp/node-b/x") is Verdict.SKIP
    assert selection.of_path("/tp/node-a/x") is Verdict.TRACE


def test_nat_flows_of_unselected_clients_are_not_kept_or_counted_unclaimed() -> None:
    from traceprobe_agent.nat_events import NatFlow, NatTable

    selection = Selection(_index())
    selection.update(Scope((_probe("TraceProbe", {"podSelector": {
        "matchLabels": {"app": "web"}}}),)))
    table = NatTable(keep_drains=0, settle_seconds=0, skips_client=selection.skips_client)
    for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.9.9.9"):  # web, other, lab, ?
        table.add(NatFlow((client, "10.96.0.20", 80), "10.0.1.2:8080"))
    assert table.unselected_flows == 2  # other and lab: no record of theirs will come
    table.annotate([])
    assert table.unclaimed_flows == 2  # web's and an unknown address's still waited for
    # A probe that now selects them: their next flows are kept.
    selection.update(Scope((_probe("ClusterTraceProbe", {}, namespace=None),)))
    table.add(NatFlow(("10.0.0.3", "10.96.0.20", 80), "10.0.1.2:8080"))
    assert table.unselected_flows == 2 and selection.skips_client("10.0.0.3") is False
