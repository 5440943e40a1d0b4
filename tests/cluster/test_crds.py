"""The generated CRDs against a real kube-apiserver: install, defaults, validation, columns.

Every file in crds/examples is applied with kubectl as a user would; every file
in crds/examples/invalid must be refused with the message its `# expect:` line
names, so the CEL rules and patterns are checked by Kubernetes itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.tools import REPO
from traceprobe_api.resources import parse

CRD_FILES = sorted((REPO / "crds").glob("*.yaml"))
EXAMPLES = REPO / "crds" / "examples"
VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))
CONDITION = {"type": "Ready", "status": "True", "reason": "AllNodesReady",
             "message": "2 of 3 selected nodes run the probe",
             "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1}


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def run(cp: Any, *args: str, input_text: str | None = None) -> Any:
    return cp.kubectl(*args, check=False, input_text=input_text)


def get(cp: Any, *args: str) -> dict[str, Any]:
    result = run(cp, "get", *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def ref(doc: dict[str, Any]) -> list[str]:
    """kubectl arguments naming the object `doc` describes."""
    meta = doc["metadata"]
    namespace = ["-n", meta["namespace"]] if meta.get("namespace") else []
    return [f"{doc['kind'].lower()}.traceprobe.io/{meta['name']}", *namespace]


def patch_status(cp: Any, target: list[str], status: dict[str, Any]) -> Any:
    return run(cp, "patch", *target, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": status}))


@pytest.fixture(scope="module")
def cp(control_plane: Any) -> Iterator[Any]:
    """The control plane with the CRDs installed; removes what these tests create."""
    for path in CRD_FILES:
        control_plane.kubectl("apply", "-f", str(path))
    for path in CRD_FILES:
        control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              f"crd/{load(path)['metadata']['name']}")
    for path in VALID:
        namespace = load(path)["metadata"].get("namespace")
        if namespace:
            run(control_plane, "create", "namespace", namespace)
    yield control_plane
    for path in VALID + INVALID:
        run(control_plane, "delete", "--ignore-not-found", "--wait=false", "-f", str(path))
    run(control_plane, "delete", "--ignore-not-found", "-n", "team-a", "traceprobe/team-probe")


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: p.name)
def test_crd_is_established_with_structural_schema(cp: Any, path: Path) -> None:
    crd = get(cp, "crd", load(path)["metadata"]["name"])
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"
    assert "NonStructuralSchema" not in conditions, crd["status"]["conditions"]


def test_short_names_and_category(cp: Any) -> None:
    resources = run(cp, "api-resources", "--api-group=traceprobe.io", "-o", "wide").stdout
    for line in ("traceprobes tp", "clustertraceprobes ctp", "nodereports tpnr"):
        name, short = line.split()
        assert re.search(rf"^{name}\s+{short}\s.*traceprobe", resources, re.MULTILINE), resources


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_applies_and_gets_the_models_defaults(cp: Any, path: Path) -> None:
    doc = load(path)
    result = run(cp, "apply", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr  # e.g. unknown or dropped fields
    stored = get(cp, *ref(doc))
    # The API server's defaults and the pydantic defaults are one and the same.
    assert stored["spec"] == parse(doc).to_dict()["spec"]
    if "status" in doc:  # only writable through the status subresource
        assert "status" not in stored
        result = patch_status(cp, ref(doc), doc["status"])
        assert result.returncode == 0, result.stderr
        assert get(cp, *ref(doc))["status"] == doc["status"]


def says(stderr: str, expected: str) -> bool:
    """`expected`'s parts (split on ` ... `) occur in `stderr` in this order.

    ` ... ` skips what the server prints between the field and the message
    (`Invalid value: "object"` for CEL rules), so the expectation can name both.
    """
    pos = 0
    for part in expected.split(" ... "):
        pos = stderr.find(part, pos)
        if pos < 0:
            return False
        pos += len(part)
    return True


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_refused_with_its_message(cp: Any, path: Path) -> None:
    (expected,) = re.findall(r"^# expect: (.+)$", path.read_text(), re.MULTILINE)
    result = run(cp, "apply", "-f", str(path))
    assert result.returncode != 0, f"{path.name} was accepted"
    assert says(result.stderr, expected.strip()), result.stderr
    assert run(cp, "get", *ref(load(path))).returncode != 0, "refused but stored anyway"


def test_get_shows_ready_nodes_and_age(cp: Any) -> None:
    shop = load(EXAMPLES / "shop-traceprobe.yaml")
    run(cp, "apply", "-f", str(EXAMPLES / "shop-traceprobe.yaml"))
    result = patch_status(cp, ref(shop), {"observedGeneration": 1, "conditions": [CONDITION],
                                          "nodes": {"desired": 3, "ready": 2},
                                          "nodesReady": "2/3"})
    assert result.returncode == 0, result.stderr
    out = run(cp, "get", "tp", "-n", "shop").stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "NODES", "AGE"], out
    assert out[1].split()[:3] == ["shop", "True", "2/3"], out
    wide = run(cp, "get", "traceprobes", "-n", "shop", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "READY", "NODES", "INTERVAL", "AGE"], wide
    run(cp, "apply", "-f", str(EXAMPLES / "cluster-traceprobe.yaml"))
    assert run(cp, "get", "ctp").stdout.split()[:4] == ["NAME", "READY", "NODES", "AGE"]
    # the category lists every kind at once; the singular names one probe
    assert "shop" in run(cp, "get", "traceprobe", "shop", "-n", "shop").stdout
    everything = run(cp, "get", "traceprobe-all", "-A").stdout
    assert "traceprobe.traceprobe.io/shop" in everything
    assert "clustertraceprobe.traceprobe.io/cluster-wide" in everything


def test_status_is_a_separate_subresource(cp: Any) -> None:
    shop = load(EXAMPLES / "shop-traceprobe.yaml")
    run(cp, "apply", "-f", str(EXAMPLES / "shop-traceprobe.yaml"))
    before = get(cp, *ref(shop))
    assert patch_status(cp, ref(shop), {"nodesReady": "1/1"}).returncode == 0
    after = get(cp, *ref(shop))
    assert after["status"]["nodesReady"] == "1/1"
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    # Through the main resource, status is ignored (and spec changes bump generation).
    result = run(cp, "patch", *ref(shop), "--type=merge", "-p",
                 json.dumps({"spec": {"interval": "20s"}, "status": {"nodesReady": "9/9"}}))
    assert result.returncode == 0, result.stderr
    changed = get(cp, *ref(shop))
    assert changed["status"]["nodesReady"] == "1/1" and changed["spec"]["interval"] == "20s"
    assert changed["metadata"]["generation"] == before["metadata"]["generation"] + 1
    run(cp, "apply", "-f", str(EXAMPLES / "shop-traceprobe.yaml"))  # restore interval


@pytest.mark.parametrize(("status", "expected"), [
    ({"conditions": [{**CONDITION, "reason": "not camel"}]},
     'status.conditions[0].reason: Invalid value: "not camel"'),
    ({"conditions": [CONDITION, CONDITION]},
     'status.conditions[1]: Duplicate value: {"type":"Ready"}'),
    ({"conditions": [{**CONDITION, "status": "Yes"}]},
     'status.conditions[0].status: Unsupported value: "Yes"'),
    ({"nodesReady": "two of three"}, 'status.nodesReady: Invalid value: "two of three"'),
    ({"nodes": {"desired": -1}}, "status.nodes.desired: Invalid value: -1"),
], ids=["reason-not-camel-case", "duplicate-condition-type", "condition-status-enum",
        "nodes-ready-format", "negative-node-count"])
def test_invalid_probe_status_is_refused(cp: Any, status: dict[str, Any], expected: str) -> None:
    shop = load(EXAMPLES / "shop-traceprobe.yaml")
    run(cp, "apply", "-f", str(EXAMPLES / "shop-traceprobe.yaml"))
    result = patch_status(cp, ref(shop), status)
    assert result.returncode != 0 and expected in result.stderr, result.stderr


def test_invalid_node_report_status_is_refused(cp: Any) -> None:
    report = load(EXAMPLES / "nodereport.yaml")
    run(cp, "apply", "-f", str(EXAMPLES / "nodereport.yaml"))
    entry = {"probe": {"kind": "TraceProbe", "name": "shop", "generation": 1},
             "state": "Attached"}
    result = patch_status(cp, ref(report), {"probes": [entry]})
    assert result.returncode != 0
    assert "namespace is required for a TraceProbe" in result.stderr, result.stderr
    columns = run(cp, "get", "nodereports").stdout.splitlines()[0].split()
    assert columns == ["NAME", "NODE", "PROBES", "HEARTBEAT", "AGE"], columns


def test_namespace_scoped_team_can_use_traceprobe_only(cp: Any) -> None:
    """An app team with a namespace Role manages TraceProbes there, and nothing wider."""
    sa = cp.serviceaccount_kubeconfig("team-a", "developer")
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "traceprobe-editor", "namespace": "team-a"},
            "rules": [{"apiGroups": ["traceprobe.io"], "resources": ["traceprobes"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch",
                                 "delete"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "developer-edits-probes", "namespace": "team-a"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "traceprobe-editor"},
               "subjects": [{"kind": "ServiceAccount", "name": "developer",
                             "namespace": "team-a"}]}
    for obj in (role, binding):
        assert run(cp, "apply", "-f", "-", input_text=json.dumps(obj)).returncode == 0
    probe = {"apiVersion": "traceprobe.io/v1alpha1", "kind": "TraceProbe",
             "metadata": {"name": "team-probe", "namespace": "team-a"}}
    ok = cp.kubectl("apply", "-f", "-", input_text=json.dumps(probe), kubeconfig_path=sa,
                    check=False)
    assert ok.returncode == 0, ok.stderr
    cluster = {**probe, "kind": "ClusterTraceProbe", "metadata": {"name": "team-probe"}}
    denied = cp.kubectl("apply", "-f", "-", input_text=json.dumps(cluster), kubeconfig_path=sa,
                        check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr, denied.stderr
    # Status belongs to the operator: the team's Role does not reach the subresource.
    status = cp.kubectl("patch", "traceprobe/team-probe", "-n", "team-a", "--subresource=status",
                        "--type=merge", "-p", '{"status": {"nodesReady": "9/9"}}',
                        kubeconfig_path=sa, check=False)
    assert status.returncode != 0 and "forbidden" in status.stderr, status.stderr
