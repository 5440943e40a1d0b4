"""The local control plane is a real one: TLS, RBAC enforced, ServiceAccount tokens."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from harness.controlplane import ControlPlane


def test_apiserver_serves_and_reports_version(control_plane: Any) -> None:
    out = control_plane.kubectl("version", "-o", "json").stdout
    assert '"serverVersion"' in out and '"gitVersion": "v1.' in out
    namespaces = control_plane.kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/default" in namespaces and "namespace/kube-system" in namespaces


def test_rbac_is_enforced_for_serviceaccounts(control_plane: Any) -> None:
    sa_config = control_plane.serviceaccount_kubeconfig("rbac-test", "reader")
    sa_core = client.CoreV1Api(control_plane.api_client(sa_config))
    with pytest.raises(ApiException) as denied:
        sa_core.list_namespaced_pod("rbac-test")
    assert denied.value.status == 403
    assert "system:serviceaccount:rbac-test:reader" in denied.value.body

    rbac = client.RbacAuthorizationV1Api(control_plane.api_client())
    rbac.create_namespaced_role("rbac-test", {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding("rbac-test", {
        "metadata": {"name": "reader-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "rbac-test"}]})
    sa_core.list_namespaced_pod("rbac-test")  # now allowed
    with pytest.raises(ApiException) as still_denied:
        sa_core.list_namespaced_pod("default")  # a Role grants one namespace only
    assert still_denied.value.status == 403
    whoami = control_plane.kubectl("auth", "can-i", "delete", "pods", "-n", "rbac-test",
                                   kubeconfig_path=sa_config, check=False)
    assert whoami.stdout.strip() == "no"


def test_stop_leaves_no_process_behind(tmp_path: Path, control_plane: Any) -> None:
    # A second, private control plane: its teardown is what is being tested.
    cp = ControlPlane(tmp_path / "cp")
    cp.start()
    pids = [p.pid for p in cp.processes]
    assert len(pids) == 2 and all(os.path.exists(f"/proc/{pid}") for pid in pids)
    cp.stop()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(
            f"/proc/{pid}/status").read_text().lower(), f"pid {pid} survived stop()"
