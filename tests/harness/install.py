"""Install traceprobe's API and RBAC into a test control plane, as a user would."""

from __future__ import annotations

from typing import Any

from harness.tools import REPO

NAMESPACE = "traceprobe-system"


def install(cp: Any) -> None:
    """CRDs, kopf peering, the namespace, and the operator's, agent's and map's RBAC."""
    for path in sorted((REPO / "crds").glob("*.yaml")):
        cp.kubectl("apply", "-f", str(path))
    cp.kubectl("apply", "-f", str(REPO / "operator/deploy/kopf-peering.yaml"))
    cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    cp.kubectl("apply", "-f", str(REPO / "operator/deploy/kopf-peering-object.yaml"))
    cp.kubectl("create", "namespace", NAMESPACE, check=False)
    cp.kubectl("apply", "-f", str(REPO / "operator/deploy/rbac.yaml"))
    cp.kubectl("apply", "-f", str(REPO / "node_agent/deploy/rbac.yaml"))
    cp.kubectl("apply", "-f", str(REPO / "service_map/deploy/rbac.yaml"))


def ensure_node(cp: Any, name: str, labels: dict[str, str]) -> None:
    label_text = ", ".join(f"{k}: {v}" for k, v in labels.items())
    cp.kubectl("create", "-f", "-", check=False, input_text=(
        f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{{label_text}}}\n"))


def apply_probe(cp: Any, name: str, namespace: str = "shop", spec: str = "{}") -> None:
    cp.kubectl("create", "namespace", namespace, check=False)
    cp.kubectl("apply", "-f", "-", input_text=(
        f"apiVersion: traceprobe.io/v1alpha1\nkind: TraceProbe\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"))


def apply_cluster_probe(cp: Any, name: str, spec: str = "{}") -> None:
    cp.kubectl("apply", "-f", "-", input_text=(
        f"apiVersion: traceprobe.io/v1alpha1\nkind: ClusterTraceProbe\n"
        f"metadata: {{name: {name}}}\nspec: {spec}\n"))


def reset_probes(cp: Any) -> None:
    """Between test modules: no probe, report, agent DaemonSet or Node of one module
    may steer the next (probes left with a finalizer and no operator would linger;
    simulated nodes all carry the bridge's address, so a stale one would own it)."""
    import json

    for plural in ("traceprobes", "clustertraceprobes"):
        listed = cp.kubectl("get", plural, "-A", "-o", "json", check=False)
        if listed.returncode != 0:
            continue  # CRDs not installed by this module
        for item in json.loads(listed.stdout).get("items", []):
            meta = item["metadata"]
            ns = ["-n", meta["namespace"]] if meta.get("namespace") else []
            if meta.get("finalizers"):
                cp.kubectl("patch", plural, meta["name"], *ns, "--type=merge", "-p",
                           '{"metadata":{"finalizers":null}}', check=False)
            cp.kubectl("delete", plural, meta["name"], *ns, "--wait=false", check=False)
    cp.kubectl("delete", "nodereports", "--all", "--wait=false", check=False)
    cp.kubectl("delete", "daemonset", "traceprobe-agent", "-n", NAMESPACE, "--wait=false",
               "--ignore-not-found", check=False)
    cp.kubectl("delete", "nodes", "--all", "--wait=false", check=False)
