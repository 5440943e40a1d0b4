"""`traceprobe status` and `traceprobe map` against a real API server: what a user sees when
the list works, when RBAC forbids it, when the credentials are refused, when the API
server does not answer, and when the map's Service has nothing behind it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.procs import free_port
from harness.tools import REPO

CLI = [sys.executable, "-m", "traceprobe_cli"]
NAMESPACE = "cli-tier"


def _cli(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run([*CLI, f"--kubeconfig={kubeconfig}", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env=env)


def _failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one line a failed run prints; nothing on stdout, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("traceprobe: "), result.stderr
    return lines[0]


def _eventually(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + 15  # RBAC changes reach the authorizer within moments
    while (result := _cli(kubeconfig, *args)).returncode != 0:
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.3)
    return result


def _elsewhere(cp: Any, tmp_path: Path, server: str, token: str | None = None) -> Path:
    """The admin's kubeconfig with another server (or token)."""
    config = yaml.safe_load(cp.admin_kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = server
    if token is not None:
        config["users"][0]["user"]["token"] = token
    path = tmp_path / "elsewhere.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def cp(control_plane: Any) -> Iterator[Any]:
    for path in sorted((REPO / "crds").glob("*.yaml")):
        control_plane.kubectl("apply", "-f", str(path))
    control_plane.kubectl("wait", "--for=condition=Established", "crd", "--all",
                          "--timeout=30s")
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    yield control_plane
    for kind, name in (("clusterrolebinding", "cli-tier-reader"),
                       ("clusterrole", "cli-tier-reader")):
        control_plane.kubectl("delete", kind, name, "--ignore-not-found", check=False)


def test_status_of_an_empty_cluster_says_so_and_succeeds(cp: Any) -> None:
    result = _cli(cp.admin_kubeconfig, "status")
    assert result.returncode == 0, result.stderr
    assert "No TraceProbes or ClusterTraceProbes." in result.stdout
    assert "No NodeReports" in result.stdout and result.stderr == ""


def test_status_lists_a_probe(cp: Any) -> None:
    cp.kubectl("apply", "-f", "-", input_text=yaml.safe_dump({
        "apiVersion": "traceprobe.io/v1alpha1", "kind": "TraceProbe",
        "metadata": {"name": "shop", "namespace": NAMESPACE}, "spec": {}}))
    result = _cli(cp.admin_kubeconfig, "status", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert f'"name": "{NAMESPACE}/shop"' in result.stdout


def test_status_without_permission_to_list_fails_naming_what_to_grant(cp: Any) -> None:
    viewer = cp.serviceaccount_kubeconfig(NAMESPACE, "status-viewer")
    line = _failed(_cli(viewer, "status"))
    assert "list traceprobes.traceprobe.io: 403 Forbidden" in line
    assert f"system:serviceaccount:{NAMESPACE}:status-viewer" in line
    assert "check RBAC: your user needs list on traceprobes.traceprobe.io" in line
    # Probes readable, NodeReports not: still a failure, naming the kind that is missing.
    cp.kubectl("create", "clusterrole", "cli-tier-reader", "--verb=list",
               "--resource=traceprobes.traceprobe.io,clustertraceprobes.traceprobe.io")
    cp.kubectl("create", "clusterrolebinding", "cli-tier-reader", "--clusterrole=cli-tier-reader",
               f"--serviceaccount={NAMESPACE}:status-viewer")
    deadline = time.monotonic() + 15
    while "nodereports" not in (line := _failed(_cli(viewer, "status"))):
        assert time.monotonic() < deadline, line
        time.sleep(0.3)
    assert "list nodereports.traceprobe.io: 403 Forbidden" in line
    cp.kubectl("create", "clusterrole", "cli-tier-nodereports", "--verb=list",
               "--resource=nodereports.traceprobe.io")
    cp.kubectl("create", "clusterrolebinding", "cli-tier-nodereports",
               "--clusterrole=cli-tier-nodereports",
               f"--serviceaccount={NAMESPACE}:status-viewer")
    try:
        assert f"{NAMESPACE}/shop" in _eventually(viewer, "status").stdout
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            cp.kubectl("delete", kind, "cli-tier-nodereports", "--ignore-not-found",
                       check=False)


def test_refused_credentials_say_so(cp: Any, tmp_path: Path) -> None:
    wrong = _elsewhere(cp, tmp_path, cp.server, token="not-a-token")
    line = _failed(_cli(wrong, "status"))
    assert "401 Unauthorized" in line and "credentials" in line


@pytest.mark.parametrize("command", [["status"], ["map"], ["map", "--watch"]])
def test_a_closed_port_fails_at_once(cp: Any, tmp_path: Path, command: list[str]) -> None:
    closed = _elsewhere(cp, tmp_path, f"https://127.0.0.1:{free_port()}")
    started = time.monotonic()
    line = _failed(_cli(closed, *command))
    assert time.monotonic() - started < 20
    assert "cannot reach the API server https://127.0.0.1:" in line
    assert "connection refused" in line and "--context" in line
    assert "No TraceProbes" not in line


def test_a_silent_server_fails_within_the_request_timeout(cp: Any, tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        kubeconfig = _elsewhere(cp, tmp_path, f"https://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        line = _failed(_cli(kubeconfig, "--request-timeout", "1", "status"))
        # One attempt, not the client's default four: the whole run stays near 1 s.
        assert time.monotonic() - started < 8
    assert "no answer within 1s (--request-timeout)" in line


def test_map_without_its_service_names_the_flags(cp: Any) -> None:
    line = _failed(_cli(cp.admin_kubeconfig, "-n", NAMESPACE, "map"))
    assert f"GET api/map from service {NAMESPACE}/traceprobe-service-map:http" in line
    assert "not found" in line and "--map-service" in line


def test_map_whose_service_has_no_pods_behind_it(cp: Any) -> None:
    cp.kubectl("apply", "-f", "-", input_text=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "idle-map", "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
    # What the endpoints controller (not run here) writes for a Service with no ready pod.
    cp.kubectl("apply", "-f", "-", input_text=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "idle-map", "namespace": NAMESPACE}}))
    for command in (["map"], ["map", "--watch", "--interval", "1"]):
        line = _failed(_cli(cp.admin_kubeconfig, "-n", NAMESPACE, "--map-service", "idle-map",
                            "--request-timeout", "5", *command))
        assert f"service {NAMESPACE}/idle-map:http" in line
        assert "503" in line and "is the service map running?" in line


def test_map_without_permission_for_the_proxy(cp: Any) -> None:
    viewer = cp.serviceaccount_kubeconfig(NAMESPACE, "map-viewer")
    line = _failed(_cli(viewer, "-n", NAMESPACE, "map"))
    assert "403 Forbidden" in line
    assert f"check RBAC: your user needs get on services/proxy in namespace {NAMESPACE}" in line
