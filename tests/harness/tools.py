"""Where the Go-built test-world binaries live (built by scripts/build-test-tools.sh)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = {"traceprobe_operator": "operator", "traceprobe_agent": "node_agent",
                  "traceprobe_map": "service_map", "traceprobe_cli": "cli",
                  "traceprobe_api": "api"}
"""Each package of the project -> the top-level folder that holds it."""
VERSIONS_FILE = REPO / "scripts" / "tool-versions.env"
_VERSION_KEYS = {
    "etcd": "ETCD_VERSION",
    "kube-apiserver": "KUBERNETES_VERSION",
    "kubectl": "KUBERNETES_VERSION",
    "otelcol": "OTELCOL_VERSION",
    "helm": "HELM_VERSION",
    # The real node's (scripts/build-test-tools.sh --node).
    "kubelet": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-proxy": "KUBERNETES_VERSION",
    "coredns": "COREDNS_VERSION",
}
_ENVTEST_TOOLS = ("etcd", "kube-apiserver", "kubectl")


class ToolMissing(RuntimeError):
    pass


def pinned_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip().strip('"')
    return versions


def cache_root() -> Path:
    return Path(os.environ.get("TRACEPROBE_CACHE", "/var/cache/traceprobe")) / "tools"


def tool_path(name: str) -> Path:
    """Path of a pinned tool binary; ToolMissing says how to build it."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and name in _ENVTEST_TOOLS and (Path(assets) / name).exists():
        return Path(assets) / name
    version = pinned_versions()[_VERSION_KEYS[name]]
    path = cache_root() / f"{name}-{version}" / name
    if not os.access(path, os.X_OK):
        raise ToolMissing(f"{name} {version} not built at {path}: run make setup")
    return path
