"""The operator against a real API server with inputs that once made it loop or lie:
probes at the API server's size limits, updates the API server refuses, a probe
setting the removed spec.export, probes an earlier version handled.

Quiet means: over a period, no Event and no traceback beyond the one report."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from harness.install import ensure_node, install
from harness.procs import ManagedProcess
from harness.tools import REPO
from harness.waiting import wait_until
from harness.world import GROUP, NS, VERSION, OperatorWorld
from traceprobe_api.resources import parse

PNS = "inputs"
ANNOTATION_LIMIT = 256 * 1024  # all of an object's annotations, keys and values
FROZEN = "traceprobe-test/frozen"  # updates of objects with this label are refused
QUIET_SECONDS = 20


def _start(world: OperatorWorld) -> ManagedProcess:
    """The operator as its ServiceAccount, every setting at a valid non-default value."""
    env = {**os.environ, "KUBECONFIG": str(world.sa_kubeconfig), "PYTHONUNBUFFERED": "1",
           "TRACEPROBE_NAMESPACE": NS, "TRACEPROBE_DETACH_TIMEOUT_SECONDS": "6",
           "TRACEPROBE_REPORT_STALE_SECONDS": "600",
           "TRACEPROBE_AGENT_IMAGE": "registry.example.com:5000/tp/agent:1.2.3",
           "TRACEPROBE_AGENT_SERVICE_ACCOUNT": "traceprobe-agent",
           "TRACEPROBE_MAP_ENDPOINT": "[fd00::10]:14317",
           "TRACEPROBE_AGENT_POD": json.dumps({"healthPort": 9475, "priorityClassName": ""})}
    proc = ManagedProcess("op-inputs", [sys.executable, "-m", "traceprobe_operator"],
                          world.tmp / "op-inputs.log", env=env, cwd=REPO)
    world.replicas.append(proc)
    return proc


def _probe(name: str, spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TraceProbe",
            "metadata": {"name": name, "namespace": PNS, **meta},
            "spec": {"nodeSelector": {"pool": name}, **(spec or {})}}


def _legacy(world: OperatorWorld) -> None:
    """Probes as the previous version left them: kopf's annotation storages, one
    handled and one held in deletion with its progress record."""
    for name, deleting in (("legacy", False), ("legacy-deleting", True)):
        spec = {"nodeSelector": {"pool": name}}
        obj = _probe(name, finalizers=["traceprobe.io/agents-detached"], annotations={
            "traceprobe.io/kopf-managed": "yes",
            "traceprobe.io/last-handled-configuration": json.dumps({"spec": spec}) + "\n",
            **({"traceprobe.io/detach": json.dumps({
                "started": "2024-01-01T00:00:00", "purpose": "delete", "retries": 3,
                "success": False, "failure": False})} if deleting else {})})
        world.custom.create_namespaced_custom_object(GROUP, VERSION, PNS, "traceprobes", obj)
        world.custom.patch_namespaced_custom_object_status(GROUP, VERSION, PNS, "traceprobes",
                                                           name, {"status": {
            "observedGeneration": 1, "conditions": [{
                "type": "Accepted", "status": "True", "reason": "Valid",
                "message": "spec accepted", "observedGeneration": 1,
                "lastTransitionTime": "2024-01-01T00:00:00Z"}]}})
        if deleting:
            world.custom.delete_namespaced_custom_object(GROUP, VERSION, PNS, "traceprobes", name)


class InputsWorld(OperatorWorld):
    op: ManagedProcess


@pytest.fixture(scope="module")
def world(control_plane: Any, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[InputsWorld]:
    install(control_plane)
    control_plane.kubectl("create", "namespace", PNS, check=False)
    for pool in ("big", "maxspec", "frozen-new", "frozen-del", "export", "legacy"):
        ensure_node(control_plane, f"tp-inputs-{pool}", {"pool": pool})
    w = InputsWorld(control_plane, tmp_path_factory.mktemp("operator-inputs"))
    _legacy(w)
    w.op = _start(w)
    yield w
    w.stop()


def probe(world: OperatorWorld, name: str) -> dict[str, Any] | None:
    found = world.probe(name, namespace=PNS)
    return dict(found) if found else None


def condition(world: OperatorWorld, name: str, type_: str = "Accepted") -> dict[str, Any]:
    obj = probe(world, name) or {}
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), {})


def events(world: OperatorWorld, name: str) -> list[tuple[str, str]]:
    return sorted((e.reason, e.message or "") for e in world.core.list_namespaced_event(
        PNS, field_selector=f"involvedObject.name={name}").items)


def log(world: InputsWorld) -> str:
    return world.op.log.read_text()


def deployed_pools(world: OperatorWorld) -> set[str]:
    ds = world.daemonset()
    if ds is None or ds.spec.template.spec.affinity is None:
        return set()
    terms = ds.spec.template.spec.affinity.node_affinity.\
        required_during_scheduling_ignored_during_execution.node_selector_terms
    return {e.values[0] for t in terms for e in t.match_expressions if e.key == "pool"}


def quietly(world: InputsWorld, *names: str) -> None:
    """Once the first reports are out (Accepted, then Ready from the first refresh),
    nothing new is said about `names` for QUIET_SECONDS, and no traceback at all."""
    def settled() -> dict[str, list[tuple[str, str]]] | None:
        first = {n: events(world, n) for n in names}
        time.sleep(6)  # more than one status tick
        return first if first == {n: events(world, n) for n in names} else None

    before = wait_until(settled, what="the first reports posted")
    lines = len(log(world).splitlines())
    time.sleep(QUIET_SECONDS)  # the period the operator must stay quiet over
    assert {n: events(world, n) for n in names} == before
    new = log(world).splitlines()[lines:]
    noisy = [line for line in new if "WARNING" in line or "ERROR" in line
             or any(f"[{PNS}/{n}]" in line and "Timer 'status'" not in line for n in names)]
    assert not noisy, noisy[:5]
    assert "Traceback" not in log(world)


def gone(world: OperatorWorld, name: str, timeout: float = 30) -> None:
    world.custom.delete_namespaced_custom_object(GROUP, VERSION, PNS, "traceprobes", name)
    wait_until(lambda: probe(world, name) is None, timeout=timeout, what=f"{name} deleted")


def test_a_probe_whose_annotations_are_at_the_limit_is_handled_quietly_and_deletable(
        world: InputsWorld) -> None:
    annotations = {"note": "x" * (ANNOTATION_LIMIT - len("note"))}
    world.custom.create_namespaced_custom_object(GROUP, VERSION, PNS, "traceprobes",
                                                 _probe("big", annotations=annotations))
    wait_until(lambda: condition(world, "big").get("status") == "True", what="big accepted")
    wait_until(lambda: "big" in deployed_pools(world), what="agents placed for big")
    obj = probe(world, "big") or {}
    assert obj["metadata"]["annotations"] == annotations  # nothing was added
    assert obj["metadata"]["finalizers"] == ["traceprobe.io/agents-detached"]
    wait_until(lambda: [r for r, _ in events(world, "big")].count("Accepted") == 1,
               what="one Accepted Event")
    quietly(world, "big")
    gone(world, "big")


def test_a_spec_at_the_schemas_maxima_applied_with_kubectl_is_handled_quietly(
        world: InputsWorld) -> None:
    prefix = ".".join(c * 63 for c in "abc") + "." + "d" * 61  # a 253-character domain

    def key(i: int) -> str:
        return f"{prefix}/{f'k{i:02d}'.ljust(63, 'x')}"

    spec = {"podSelector": {
        "matchExpressions": [{"key": key(i), "operator": "In",
                              "values": [f"v{j:02d}".ljust(63, "y") for j in range(64)]}
                             for i in range(32)],
        "matchLabels": {key(100 + i): "w" * 63 for i in range(64)}},
        "nodeSelector": {"pool": "maxspec", **{f"n{i:02d}": "v" for i in range(63)}}}
    # kubectl apply keeps its own copy in an annotation: about 170 KB of the 256 KiB.
    world.cp.kubectl("apply", "-f", "-", input_text=json.dumps(_probe("maxspec", spec)))
    wait_until(lambda: condition(world, "maxspec").get("status") == "True", what="accepted")
    annotations = (probe(world, "maxspec") or {})["metadata"]["annotations"]
    assert list(annotations) == ["kubectl.kubernetes.io/last-applied-configuration"]
    quietly(world, "maxspec")
    gone(world, "maxspec")


@pytest.fixture
def refusing(world: OperatorWorld) -> Iterator[None]:
    """A ValidatingAdmissionPolicy refusing every update of an object labelled FROZEN
    (as a cluster's own policies may), on probes and on a ConfigMap canary."""
    policy = {"apiVersion": "admissionregistration.k8s.io/v1",
              "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "tp-test-frozen"},
              "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [
                  {"apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["UPDATE"],
                   "resources": ["traceprobes"]},
                  {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                   "resources": ["configmaps"]}]},
                  "validations": [{"expression": f"!has(oldObject.metadata.labels) || "
                                                 f"!('{FROZEN}' in oldObject.metadata.labels)",
                                   "message": "frozen objects may not be changed"}]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1",
               "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": "tp-test-frozen"},
               "spec": {"policyName": "tp-test-frozen", "validationActions": ["Deny"]}}
    world.cp.kubectl("apply", "-f", "-", input_text=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [policy, binding]}))
    world.cp.kubectl("create", "configmap", "tp-canary", "-n", PNS, check=False)
    world.cp.kubectl("label", "configmap", "tp-canary", "-n", PNS, f"{FROZEN}=yes")
    wait_until(lambda: world.cp.kubectl("label", "configmap", "tp-canary", "-n", PNS, "x=1",
                                        "--dry-run=server", check=False).returncode != 0,
               what="the admission policy is in force")
    yield
    world.cp.kubectl("delete", "validatingadmissionpolicybinding", "tp-test-frozen",
                     "--ignore-not-found")
    world.cp.kubectl("delete", "validatingadmissionpolicy", "tp-test-frozen",
                     "--ignore-not-found")


def test_updates_the_api_server_refuses_are_reported_once_and_retried_with_backoff(
        world: InputsWorld, refusing: None) -> None:
    # An accepted probe, frozen afterwards (the policy looks at the old object), and
    # deleted: letting its finalizer go is an update, refused.
    world.custom.create_namespaced_custom_object(GROUP, VERSION, PNS, "traceprobes",
                                                 _probe("frozen-del"))
    wait_until(lambda: condition(world, "frozen-del").get("status") == "True")
    world.cp.kubectl("label", "traceprobe", "frozen-del", "-n", PNS, f"{FROZEN}=yes")
    world.custom.delete_namespaced_custom_object(GROUP, VERSION, PNS, "traceprobes",
                                                 "frozen-del")
    # A probe frozen from its creation: the operator cannot even add its finalizer.
    world.custom.create_namespaced_custom_object(GROUP, VERSION, PNS, "traceprobes", _probe(
        "frozen-new", labels={FROZEN: "yes"}))

    refused = wait_until(lambda: condition(world, "frozen-new").get("reason") == "UpdateRefused"
                         and condition(world, "frozen-new"), what="UpdateRefused")
    assert refused["status"] == "False" and "frozen objects may not be changed" in refused[
        "message"]
    assert condition(world, "frozen-new", "Ready")["reason"] == "UpdateRefused"
    assert "frozen-new" not in deployed_pools(world)
    wait_until(lambda: "FinalizerRemovalRefused" in [r for r, _ in events(world, "frozen-del")],
               timeout=30, what="a Warning saying why frozen-del stays")
    assert probe(world, "frozen-del") is not None
    quietly(world, "frozen-new", "frozen-del")
    for name, reason in (("frozen-new", "UpdateRefused"),
                         ("frozen-del", "FinalizerRemovalRefused")):
        assert [r for r, _ in events(world, name)].count(reason) == 1, events(world, name)

    # Once the API server allows it, both are done within the backoff's cap.
    world.cp.kubectl("delete", "validatingadmissionpolicybinding", "tp-test-frozen")
    wait_until(lambda: condition(world, "frozen-new").get("status") == "True", timeout=90,
               what="frozen-new accepted once its finalizer could be added")
    wait_until(lambda: "frozen-new" in deployed_pools(world), what="frozen-new deployed")
    wait_until(lambda: probe(world, "frozen-del") is None, timeout=90,
               what="frozen-del released once its finalizer could go")
    assert "Traceback" not in log(world)


def test_a_probe_setting_the_removed_export_is_refused_or_pruned_never_half_honoured(
        world: OperatorWorld) -> None:
    # Export is cluster-wide: spec.export was removed, as nothing exported per probe.
    body = _probe("export", {"export": {"endpoint": "https://otlp.example.com:4317"}})
    refused = world.cp.kubectl("apply", "-f", "-", input_text=json.dumps(body), check=False)
    assert refused.returncode != 0, "kubectl apply stored a probe with spec.export"
    assert 'unknown field "spec.export"' in refused.stderr, refused.stderr
    with pytest.raises(ApiException) as strict:
        world.custom.create_namespaced_custom_object(GROUP, VERSION, PNS, "traceprobes", body,
                                                     field_validation="Strict")
    message = json.loads(strict.value.body)["message"]
    assert strict.value.status == 400 and 'unknown field "spec.export"' in message, message
    assert probe(world, "export") is None
    # Without strict validation the API server drops the field (as it does from objects
    # stored before the removal); the rest of the probe runs as written.
    world.custom.create_namespaced_custom_object(GROUP, VERSION, PNS, "traceprobes", body)
    assert (probe(world, "export") or {})["spec"] == parse(_probe("export")).to_dict()["spec"]
    wait_until(lambda: condition(world, "export").get("status") == "True",
               what="the pruned probe accepted")
    wait_until(lambda: "export" in deployed_pools(world), what="the pruned probe deployed")
    gone(world, "export")


def test_probes_an_earlier_version_handled_are_taken_over_without_a_rerun(
        world: OperatorWorld) -> None:
    wait_until(lambda: probe(world, "legacy-deleting") is None, timeout=30,
               what="the probe held in deletion is released")
    wait_until(lambda: not [k for k in (probe(world, "legacy") or {})["metadata"].get(
        "annotations", {}) if k.startswith("traceprobe.io/")], what="old annotations dropped")
    assert condition(world, "legacy")["lastTransitionTime"] == "2024-01-01T00:00:00Z"
    assert "legacy" in deployed_pools(world)
    assert "Accepted" not in [r for r, _ in events(world, "legacy")]  # nothing re-run
    gone(world, "legacy")
