"""Each of the chart's three ServiceAccounts, against the real API server with the
chart's RBAC applied: allowed what its role lists, denied what it does not need."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from harness.chart_cluster import NS, RELEASE


def _rule_checks(docs: list[dict[str, Any]], role: str) -> list[list[str]]:
    """One `kubectl auth can-i` per verb and resource the chart's role grants."""
    checks = []
    for kind in ("ClusterRole", "Role"):
        rules = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == role]
        scope = ["-n", NS] if kind == "Role" else ["-A"]
        for rule in rules[0]["rules"] if rules else []:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    base, _, sub = resource.partition("/")
                    name = f"{base}.{group}" if group else base
                    for verb in rule["verbs"]:
                        checks.append([verb, name, *scope,
                                       *([f"--subresource={sub}"] if sub else [])])
    return checks


DENIED = {
    "operator": [["list", "secrets", "-A"], ["create", "pods", "-n", NS],
                 ["delete", "traceprobes.traceprobe.io", "-A"],
                 ["create", "nodereports.traceprobe.io"],
                 ["create", "daemonsets.apps", "-n", "kube-system"], ["patch", "nodes"],
                 ["update", "customresourcedefinitions.apiextensions.k8s.io"],
                 ["create", "clusterrolebindings.rbac.authorization.k8s.io"],
                 ["get", "configmaps", "-n", NS]],
    "agent": [["list", "secrets", "-A"], ["get", "pods", "-n", "default"],
              ["create", "pods", "-n", NS], ["patch", "traceprobes.traceprobe.io", "-A"],
              ["patch", "traceprobes.traceprobe.io", "-A", "--subresource=status"],
              ["delete", "nodereports.traceprobe.io"], ["patch", "nodereports.traceprobe.io"],
              ["list", "nodes"], ["patch", "nodes"], ["update", "daemonsets.apps", "-n", NS],
              ["create", "events", "-A"],
              # Token reviews only with agent.metrics.listen hostIP or all.
              ["create", "tokenreviews.authentication.k8s.io"],
              ["create", "subjectaccessreviews.authorization.k8s.io"]],
    "service-map": [["list", "secrets", "-A"], ["get", "configmaps", "-A"],
                    ["create", "pods", "-n", NS], ["delete", "pods", "-A"],
                    ["update", "services", "-A"], ["list", "deployments.apps", "-A"],
                    ["patch", "traceprobes.traceprobe.io", "-A"],
                    ["list", "nodereports.traceprobe.io"], ["create", "events", "-A"],
                    ["update", "endpointslices.discovery.k8s.io", "-A"]],
}


@pytest.mark.parametrize("component", ["operator", "agent", "service-map"])
def test_serviceaccount_may_do_exactly_what_its_role_lists(installed: Any,
                                                           component: str) -> None:
    cp, docs, _ = installed
    name = f"{RELEASE}-traceprobe-{component}"
    kubeconfig = cp.serviceaccount_kubeconfig(NS, name)

    def can(args: list[str]) -> tuple[list[str], str]:
        out = cp.kubectl("auth", "can-i", *args, kubeconfig_path=kubeconfig, check=False)
        return args, out.stdout.strip()

    allowed = _rule_checks(docs, name)
    assert len(allowed) > 5
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(can, allowed + DENIED[component]))
    wrong = [f"{'may not' if i < len(allowed) else 'may'} {' '.join(args)}"
             for i, (args, answer) in enumerate(answers)
             if answer != ("yes" if i < len(allowed) else "no")]
    assert not wrong, f"{name}: " + "; ".join(wrong)
