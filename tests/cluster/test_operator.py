"""The operator against the real API server, as its own ServiceAccount with exactly
the RBAC it declares (operator/deploy/rbac.yaml)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.install import apply_probe, ensure_node, install
from harness.procs import ManagedProcess
from harness.waiting import wait_until
from harness.world import GROUP, NS, VERSION, OperatorWorld


@pytest.fixture(scope="module")
def world(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    install(control_plane)
    ensure_node(control_plane, "tp-node-a", {"kubernetes.io/os": "linux", "pool": "web"})
    w = OperatorWorld(control_plane, tmp_path_factory.mktemp("operator"))
    w.start_operator()
    yield w
    w.stop()


def _apply_probe(cp: Any, name: str, node_selector: str = "{pool: web}") -> None:
    apply_probe(cp, name, "shop", f"{{nodeSelector: {node_selector}}}")


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


def test_delete_without_agents_is_immediate(world: Any) -> None:
    _apply_probe(world.cp, "unwatched")
    wait_until(lambda: world.condition("unwatched", "Accepted").get("status") == "True")
    started = time.monotonic()
    world.custom.delete_namespaced_custom_object(GROUP, VERSION, "shop", "traceprobes",
                                                 "unwatched")
    wait_until(lambda: world.probe("unwatched") is None, what="deleted")
    # No agent ever reported it, so nothing to wait for (the timeout is 8 s).
    assert time.monotonic() - started < 5


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
    ("get", "secrets", "shop"),  # nothing names Secrets to it: spec.export was removed
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

