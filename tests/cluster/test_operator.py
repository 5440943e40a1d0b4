"""The operator against the real API server, as its own ServiceAccount with exactly
the RBAC it declares (operator/deploy/rbac.yaml)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from harness.procs import ManagedProcess
from harness.tools import REPO

NS = "traceprobe-system"
GROUP, VERSION = "traceprobe.io", "v1alpha1"


def wait_until(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except ApiException as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")


class OperatorWorld:
    def __init__(self, cp: Any, tmp: Path) -> None:
        self.cp = cp
        self.tmp = tmp
        api = cp.api_client()
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.sa_kubeconfig = cp.serviceaccount_kubeconfig(NS, "traceprobe-operator")
        self.replicas: list[ManagedProcess] = []

    def start_operator(self, name: str = "op-1") -> ManagedProcess:
        env = {**os.environ, "KUBECONFIG": str(self.sa_kubeconfig),
               "TRACEPROBE_NAMESPACE": NS, "TRACEPROBE_DETACH_TIMEOUT_SECONDS": "8",
               "PYTHONUNBUFFERED": "1"}
        proc = ManagedProcess(name, [sys.executable, "-m", "traceprobe_operator"],
                              self.tmp / f"{name}.log", env=env, cwd=REPO)
        self.replicas.append(proc)
        return proc

    def daemonset(self) -> Any:
        try:
            return self.apps.read_namespaced_daemon_set("traceprobe-agent", NS)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def probe(self, name: str, namespace: str = "shop") -> Any:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                            "traceprobes", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        obj = self.probe(name) or {}
        return next((c for c in (obj.get("status") or {}).get("conditions") or []
                     if c["type"] == type_), {})

    def report(self, node: str, probe: str, state: str, generation: int = 1) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeReport",
                "metadata": {"name": node}, "spec": {"nodeName": node}}
        try:
            self.custom.create_cluster_custom_object(GROUP, VERSION, "nodereports", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        status = {"heartbeatTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "probes": [{"probe": {"kind": "TraceProbe", "namespace": "shop",
                                        "name": probe, "generation": generation},
                              "state": state}]}
        self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "nodereports", node,
                                                       {"status": status})

    def stop(self) -> None:
        for proc in self.replicas:
            proc.stop()


@pytest.fixture(scope="module")
def world(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cp = control_plane
    for path in sorted((REPO / "crds").glob("*.yaml")):
        cp.kubectl("apply", "-f", str(path))
    cp.kubectl("apply", "-f", str(REPO / "operator/deploy/kopf-peering.yaml"))
    cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    cp.kubectl("apply", "-f", str(REPO / "operator/deploy/kopf-peering-object.yaml"))
    cp.kubectl("create", "namespace", NS, check=False)
    cp.kubectl("create", "namespace", "shop", check=False)
    cp.kubectl("apply", "-f", str(REPO / "operator/deploy/rbac.yaml"))
    for node in ("tp-node-a",):
        cp.kubectl("create", "-f", "-", check=False, input_text=(
            f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n"
            f"  labels: {{kubernetes.io/os: linux, pool: web}}\n"))
    w = OperatorWorld(cp, tmp_path_factory.mktemp("operator"))
    w.start_operator()
    yield w
    w.stop()


def _apply_probe(cp: Any, name: str, node_selector: str = "{pool: web}") -> None:
    cp.kubectl("apply", "-f", "-", input_text=(
        f"apiVersion: traceprobe.io/v1alpha1\nkind: TraceProbe\n"
        f"metadata: {{name: {name}, namespace: shop}}\n"
        f"spec: {{nodeSelector: {node_selector}}}\n"))


def test_probe_creates_daemonset_and_status_follows_reports(world: Any) -> None:
    _apply_probe(world.cp, "web")
    ds = wait_until(world.daemonset, what="agent DaemonSet")
    terms = ds.spec.template.spec.affinity.node_affinity.\
        required_during_scheduling_ignored_during_execution.node_selector_terms
    assert terms[0].match_expressions[0].key == "pool"
    wait_until(lambda: world.condition("web", "Accepted").get("status") == "True",
               what="Accepted=True")
    ready = wait_until(lambda: world.condition("web", "Ready").get("reason") == "NodesPending"
                       and world.condition("web", "Ready"), what="Ready=False NodesPending")
    assert "tp-node-a: AgentNotReported" in ready["message"]

    world.report("tp-node-a", "web", "Attached")
    wait_until(lambda: world.condition("web", "Ready").get("status") == "True",
               what="Ready=True after the agent reports Attached")
    out = world.cp.kubectl("get", "traceprobes", "-n", "shop").stdout
    assert out.split("\n")[0].split()[:4] == ["NAME", "READY", "NODES", "AGE"]
    assert "web" in out and "True" in out and "1/1" in out


def test_spec_change_rolls_the_daemonset(world: Any) -> None:
    before = wait_until(world.daemonset).spec.template.metadata.annotations
    _apply_probe(world.cp, "web", "{pool: db}")
    wait_until(lambda: world.daemonset().spec.template.metadata.annotations != before,
               what="DaemonSet template rolled")


def test_delete_waits_for_agents_to_detach(world: Any) -> None:
    _apply_probe(world.cp, "held")
    world.report("tp-node-a", "held", "Attached")
    wait_until(lambda: world.condition("held", "Accepted").get("status") == "True")
    world.custom.delete_namespaced_custom_object(GROUP, VERSION, "shop", "traceprobes", "held")
    wait_until(lambda: world.condition("held", "Ready").get("reason") == "Detaching",
               what="Detaching condition while the agent is attached")
    assert world.probe("held") is not None  # the finalizer holds it
    world.report("tp-node-a", "held", "Detached")
    wait_until(lambda: world.probe("held") is None, what="probe gone after detach")


def test_delete_times_out_with_a_warning_event(world: Any) -> None:
    _apply_probe(world.cp, "stuck")
    world.report("tp-node-a", "stuck", "Attached")
    wait_until(lambda: world.condition("stuck", "Accepted").get("status") == "True")
    world.custom.delete_namespaced_custom_object(GROUP, VERSION, "shop", "traceprobes", "stuck")
    wait_until(lambda: world.probe("stuck") is None, timeout=40, what="deleted after timeout")
    events = world.core.list_namespaced_event("shop").items
    assert any(e.reason == "DetachTimeout" and e.involved_object.name == "stuck"
               for e in events), [e.reason for e in events]


def test_last_probe_gone_removes_daemonset(world: Any) -> None:
    for name in ("web",):
        world.custom.delete_namespaced_custom_object(GROUP, VERSION, "shop", "traceprobes", name)
    world.report("tp-node-a", "web", "Detached", generation=2)
    wait_until(lambda: world.probe("web") is None, timeout=30, what="web deleted")
    wait_until(lambda: world.daemonset() is None, what="DaemonSet removed")


def _handled(proc: ManagedProcess, probe: str) -> bool:
    return f"[shop/{probe}] Handler 'accept' succeeded" in proc.log.read_text()


def test_operator_restart_resumes_and_second_replica_is_passive(world: Any) -> None:
    world.replicas[0].stop()
    _apply_probe(world.cp, "while-down")  # changed while no operator runs
    first = world.start_operator("op-restarted")
    wait_until(lambda: world.condition("while-down", "Accepted").get("status") == "True",
               what="restarted operator accepts a probe created while it was down")
    second = world.start_operator("op-standby")
    time.sleep(5)  # peering: the lower-priority replica pauses
    _apply_probe(world.cp, "one-handler")
    wait_until(lambda: world.condition("one-handler", "Accepted").get("status") == "True")
    time.sleep(2)
    handlers = [p for p in (first, second) if _handled(p, "one-handler")]
    assert len(handlers) == 1, "exactly one replica must act; the other stands by"
    active, standby = handlers[0], (second if handlers[0] is first else first)

    active.stop()  # graceful: it leaves the peering, the standby takes over
    _apply_probe(world.cp, "failover")
    wait_until(lambda: _handled(standby, "failover"), timeout=30,
               what="standby replica takes over after the active one stops")


@pytest.mark.parametrize("verb,resource,namespace", [
    ("list", "secrets", "shop"),
    ("create", "pods", NS),
    ("delete", "traceprobes.traceprobe.io", "shop"),
    ("create", "nodereports.traceprobe.io", ""),
    ("create", "daemonsets.apps", "shop"),
    ("patch", "nodes", ""),
])
def test_operator_serviceaccount_is_denied_what_it_does_not_need(
        world: Any, verb: str, resource: str, namespace: str) -> None:
    args = ["auth", "can-i", verb, resource] + (["-n", namespace] if namespace else [])
    answer = world.cp.kubectl(*args, kubeconfig_path=world.sa_kubeconfig, check=False)
    assert answer.stdout.strip() == "no", f"operator may {verb} {resource} in {namespace!r}"

