"""Cluster objects into directories: IP reuse, hostNetwork, owners, slices, probes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_api.selectors import matches
from traceprobe_map.metadata import MetadataCache
from traceprobe_map.peers import Peer, Resolver


def pod(uid: str, name: str, ip: str | None, owner: tuple[str, str] | None = None,
        ns: str = "shop", labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "name": name, "namespace": ns, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {"metadata": meta, "spec": spec,
            "status": {"phase": "Running", "podIPs": [{"ip": ip}] if ip else []}}


def test_reused_ip_belongs_to_each_pod_in_its_time() -> None:
    r = Resolver()
    c = MetadataCache(r)
    c.pod("ADDED", pod("u1", "db-0", "10.0.0.9", ("StatefulSet", "db")), now=100)
    c.pod("DELETED", pod("u1", "db-0", "10.0.0.9", ("StatefulSet", "db")), now=200)
    c.pod("ADDED", pod("u2", "etl-x", "10.0.0.9", ("Job", "etl-1"), ns="batch"), now=230)
    c.owner("ADDED", {"metadata": {"namespace": "batch", "name": "etl-1", "ownerReferences": [
        {"kind": "CronJob", "name": "etl", "controller": True}]}}, "Job")
    assert r.remote("10.0.0.9", 150) == Peer("workload", "db", "shop", "StatefulSet")
    assert r.remote("10.0.0.9", 210) == Peer("workload", "db", "shop", "StatefulSet")  # grace
    assert r.remote("10.0.0.9", 240) == Peer("workload", "etl", "batch", "CronJob")


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_pod_first_seen_finished_owned_its_ip_while_it_ran() -> None:
    """A Job's pod can go from Pending (no IP) to Succeeded between two status updates,
    as a real kubelet reports a container that ran for half a second."""
    r = Resolver()
    c = MetadataCache(r)
    job = ("Job", "batch")
    c.pod("ADDED", {**pod("u1", "batch-x", None, job), "status": {"phase": "Pending"}},
          now=1000)
    done = pod("u1", "batch-x", "10.0.0.7", job)
    done["status"] |= {"phase": "Succeeded", "startTime": _stamp(1001), "containerStatuses": [
        {"state": {"terminated": {"finishedAt": _stamp(1002)}}}]}
    c.pod("MODIFIED", done, now=1004)
    batch = Peer("workload", "batch", "shop", "Job")
    assert r.remote("10.0.0.7", 1001.5) == batch  # a record of while it ran
    assert r.remote("10.0.0.7", 1010) == batch  # a late record: the usual grace
    # The address has a new owner since: the old tenure must not take it back.
    c.pod("ADDED", pod("u2", "api-1", "10.0.0.7", ("ReplicaSet", "api")), now=1020)
    c.pod("DELETED", done, now=1021)
    assert r.remote("10.0.0.7", 1030).name == "api"
    # Without a start time there is no span to claim.
    c.pod("MODIFIED", {**pod("u3", "etl-y", "10.0.0.8", job), "status": {
        "phase": "Failed", "podIPs": [{"ip": "10.0.0.8"}]}}, now=2005)
    assert r.remote("10.0.0.8", 2000).kind == "external"


def test_host_network_pod_resolves_to_its_node_and_relist_forgets_missing_pods() -> None:
    r = Resolver()
    c = MetadataCache(r)
    c.node("ADDED", {"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname",
                                                            "address": "n1"}]}}, now=0)
    c.pod("ADDED", pod("h", "node-exporter", "192.168.1.10", ("DaemonSet", "ne"),
                       hostNetwork=True), now=0)
    c.pod("ADDED", pod("a", "web-1", "10.0.0.1", ("Deployment", "web")), now=0)
    assert r.remote("192.168.1.10", 10) == Peer("node", "n1")
    c.relist_pods([], now=50)
    assert r.remote("10.0.0.1", 500) == Peer("external", "10.0.0.1")


def test_services_and_endpoint_slices() -> None:
    r = Resolver()
    c = MetadataCache(r)
    c.service("ADDED", {"metadata": {"namespace": "pay", "name": "payments"},
                        "spec": {"clusterIPs": ["10.96.0.20", "fd00:96::20"]}}, now=0)
    pay = Peer("service", "payments", "pay")
    for name, ips in (("payments-a", ["10.0.1.1"]), ("payments-b", ["10.0.1.2"])):
        c.endpoint_slice("ADDED", {
            "metadata": {"namespace": "pay", "name": name,
                         "labels": {"kubernetes.io/service-name": "payments"}},
            "endpoints": [{"addresses": ips}]})
    assert r.remote("fd00:96::20", 1) == pay
    assert r.endpoints[pay] == {"10.0.1.1", "10.0.1.2"}
    c.endpoint_slice("DELETED", {"metadata": {"namespace": "pay", "name": "payments-a",
                                              "labels": {}}})
    assert r.endpoints[pay] == {"10.0.1.2"}
    c.service("DELETED", {"metadata": {"namespace": "pay", "name": "payments"}}, now=10)
    assert r.remote("10.96.0.20", 100) == Peer("external", "10.96.0.20")


def test_probes_of_a_record_follow_selectors() -> None:
    c = MetadataCache(Resolver())
    c.pod("ADDED", pod("a", "web-1", "10.0.0.1", labels={"app": "web"}), now=0)
    c.namespace("ADDED", {"metadata": {"name": "shop", "labels": {"team": "shop"}}})
    c.probe("ADDED", {"metadata": {"namespace": "shop", "name": "web"},
                      "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}, "TraceProbe")
    c.probe("ADDED", {"metadata": {"namespace": "shop", "name": "db"},
                      "spec": {"podSelector": {"matchLabels": {"app": "db"}}}}, "TraceProbe")
    c.probe("ADDED", {"metadata": {"name": "all"}, "spec": {"namespaceSelector": {
        "matchExpressions": [{"key": "team", "operator": "In", "values": ["shop"]}]}}},
            "ClusterTraceProbe")
    t = datetime(2026, 1, 1, tzinfo=UTC)
    record = ConnectionRecord(node="n", role=Role.CLIENT, transport="tcp", family="ipv4",
                              interval_start=t, interval_end=t, k8sPodUid="a")
    assert sorted(c.probes_of(record)) == ["all", "shop/web"]
    assert c.probe_refs() == ["all", "shop/db", "shop/web"]


def test_label_selector_operators() -> None:
    labels = {"app": "web", "tier": "front"}
    assert matches(None, labels) and matches({}, labels)
    assert matches({"matchExpressions": [{"key": "tier", "operator": "NotIn",
                                          "values": ["back"]}]}, labels)
    assert not matches({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
                       labels)
    assert not matches({"matchLabels": {"app": "db"}}, labels)
    assert not matches({"matchExpressions": [{"key": "app", "operator": "Bogus"}]}, labels)
