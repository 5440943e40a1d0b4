from __future__ import annotations

from datetime import UTC, datetime

from traceprobe_agent.pod_index import AwaitPods, PodIndex, PodInfo, pod_info, workload_of
from traceprobe_api.records import ConnectionRecord, Role

UID = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"


def _owner(kind: str, name: str) -> dict[str, object]:
    return {"kind": kind, "name": name, "controller": True}


def test_workload_from_owner_chain() -> None:
    rs = {"name": "web-7d9f5-x", "labels": {"pod-template-hash": "7d9f5"},
          "ownerReferences": [_owner("ReplicaSet", "web-7d9f5")]}
    assert workload_of(rs) == ("Deployment", "web")
    bare_rs = {"name": "p", "ownerReferences": [_owner("ReplicaSet", "legacy")]}
    assert workload_of(bare_rs) == ("ReplicaSet", "legacy")
    assert workload_of({"name": "db-0", "ownerReferences": [_owner("StatefulSet", "db")]}) == (
        "StatefulSet", "db")
    assert workload_of({"name": "solo"}) == ("Pod", "solo")


def _record(cgroup_path: str) -> ConnectionRecord:
    now = datetime.now(UTC)
    return ConnectionRecord(node="n", role=Role.CLIENT, transport="tcp", family="ipv4",
                            cgroup_path=cgroup_path, interval_start=now, interval_end=now)


def test_enrich_by_cgroup_and_grace_after_delete() -> None:
    index = PodIndex(grace_seconds=10)
    index.upsert(pod_info({"metadata": {"uid": UID, "namespace": "shop", "name": "web-1",
                                        "ownerReferences": [_owner("DaemonSet", "agent")]},
                           "spec": {"hostNetwork": True}}))
    rec = index.enrich(_record(f"/kubepods/burstable/pod{UID}/abc"))
    assert (rec.k8s_pod, rec.k8s_workload_kind, rec.k8s_host_network) == ("web-1", "DaemonSet",
                                                                         True)
    assert rec.to_dict()["k8sPod"] == "web-1"
    index.delete(UID, now=100)
    index.expire(now=105)
    assert index.enrich(_record(f"/kubepods/pod{UID}")).k8s_pod == "web-1"  # late record
    index.expire(now=111)
    assert index.enrich(_record(f"/kubepods/pod{UID}")).k8s_pod is None
    assert index.enrich(_record("/system.slice/x")).k8s_pod is None


def test_relisting_marks_missing_pods_deleted() -> None:
    index = PodIndex(grace_seconds=0)
    index.upsert(pod_info({"metadata": {"uid": UID, "namespace": "a", "name": "x"}}))
    index.replace_all([], now=1)
    index.expire(now=2)
    assert len(index) == 0


def test_records_of_a_pod_not_yet_known_wait_for_its_name() -> None:
    """The kubelet ran a Job's pod before this agent's watch said it exists."""
    index = PodIndex()
    clock = [100.0]
    hold = AwaitPods(index, max_wait=10, clock=lambda: clock[0])
    uid = "0b3c9e2a-1d4f-4a5b-8c6d-7e8f9a0b1c2d"
    job = _record(f"/kubepods/besteffort/pod{uid}/c1")
    host = _record("/system.slice/sshd.service")
    assert hold([job, host]) == [host] and len(hold) == 1  # the host's goes on at once
    clock[0] = 102
    index.upsert(PodInfo(uid, "batch", "report-x", "Job", "report", False))
    (named,) = hold([])
    assert (named.k8s_workload_kind, named.k8s_workload) == ("Job", "report")
    # A pod that never shows is sent unnamed after the wait, counted.
    other = _record("/kubepods/pod1a2b3c4d-0000-4000-8000-000000000000/c2")
    assert hold([other]) == []
    clock[0] = 113
    assert hold([]) == [other] and hold.unnamed == 1
    # Stopping: nothing is kept back.
    assert hold([_record("/kubepods/pod9f8e7d6c-5b4a-4321-8fed-cba987654321/c3")]) == []
    assert len(hold.drain()) == 1 and len(hold) == 0
