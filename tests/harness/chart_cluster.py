"""The chart's objects on the real API server of the cluster tier: applied with
kubectl (server-side validation on), read back as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.chart import render, to_yaml

RELEASE, NS = "tpchart", "tpchart-system"
PROBE_NS = "tpchart-shop"


def apply_docs(cp: Any, docs: list[dict[str, Any]], tmp: Path, *extra: str) -> Any:
    path = tmp / f"manifest-{abs(hash(json.dumps(docs, sort_keys=True)))}.yaml"
    path.write_text(to_yaml(docs))
    return cp.kubectl("apply", "--validate=strict", "-f", str(path), *extra, check=False)


def get_json(cp: Any, *args: str) -> Any:
    """`kubectl get ARGS -o json`, parsed; None when it fails (e.g. not found)."""
    result = cp.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _install_crds(cp: Any, tmp: Path) -> None:
    crds = [d for d in render(crds=True) if d["kind"] == "CustomResourceDefinition"]
    for extra in (["--dry-run=server"], []):
        result = apply_docs(cp, crds, tmp, *extra)
        assert result.returncode == 0, result.stderr
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
               *[f"crd/{d['metadata']['name']}" for d in crds])


def install_chart_objects(cp: Any, tmp: Path) -> list[dict[str, Any]]:
    """The chart's objects (default values) applied for real, after a server dry-run;
    the test Pod only dry-run (no kubelet would run it)."""
    _install_crds(cp, tmp)
    cp.kubectl("create", "namespace", NS, check=False)
    docs = render(release=RELEASE, namespace=NS)
    dry = apply_docs(cp, docs, tmp, "--dry-run=server")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("(server dry run)") == len(docs), dry.stdout
    real = apply_docs(cp, [d for d in docs if d["kind"] != "Pod"], tmp)
    assert real.returncode == 0, real.stderr
    return docs
