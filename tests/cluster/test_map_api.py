"""The map's HTTP API, directly and through the real API server's service proxy, and the
`traceprobe` CLI against that API server, all on the shop scenario (harness.known_maps)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import known_maps as shop
from harness.map_server import ProxiedMap, get, local_server, proxied_map
from harness.prereq import require_root
from harness.tools import REPO
from traceprobe_map.snapshot import MapSnapshot

CLI = [sys.executable, "-m", "traceprobe_cli"]


@pytest.fixture(scope="module")
def source() -> shop.StaticSource:
    return shop.StaticSource(shop.shop_snapshot())


@pytest.fixture(scope="module")
def local(source: shop.StaticSource) -> Iterator[str]:
    with local_server(source) as url:
        yield url


@pytest.fixture(scope="module")
def published(control_plane: Any, source: shop.StaticSource) -> Iterator[ProxiedMap]:
    require_root("serving on the pod bridge's address")
    with proxied_map(control_plane, source) as proxied:
        yield proxied


def _json(url: str) -> Any:
    status, _, body = get(url)
    assert status == 200, body
    return json.loads(body)


# --- the API, directly --------------------------------------------------------------

def test_map_is_the_snapshot_wire_form(local: str) -> None:
    body = _json(local + "api/map")
    assert body == shop.shop_snapshot().to_dict()
    assert MapSnapshot.model_validate(body) == shop.shop_snapshot()


def test_filters_as_query_parameters(local: str, source: shop.StaticSource) -> None:
    body = _json(local + "api/map?namespace=pay&probe=platform")
    assert {e["id"] for e in body["edges"]} == {
        f"{shop.FRONTEND}->{shop.PAYMENTS}:443/tcp", f"{shop.PAYMENTS_V2}->{shop.BANK}:443/tcp"}
    body = _json(local + "api/map?search=store&minRate=1.5&window=30s")
    assert [e["id"] for e in body["edges"]] == [f"{shop.CART}->{shop.STORE}:5432/tcp"]
    assert body["windowSeconds"] == 30 and source.windows[-1] == 30.0


def test_bad_query_and_unknown_path(local: str) -> None:
    status, _, body = get(local + "api/map?minRate=lots")
    assert status == 400 and "minRate" in json.loads(body)["message"]
    status, _, body = get(local + "api/map?namespaces=shop")
    assert status == 400 and "unknown query parameter" in json.loads(body)["message"]
    assert get(local + "api/nothing")[0] == 404
    assert get(local + "../etc/passwd")[0] == 404


def test_read_only_and_health(local: str) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        status, headers, _ = get(local + "api/map", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = get(local + "api/map", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert get(local + "healthz")[0:3:2] == (200, b"ok")
    assert get(local + "api/health")[0] == 200  # the Grafana plugin's "Save & Test"


def test_page_and_assets_are_served_with_a_strict_policy(local: str) -> None:
    status, headers, body = get(local)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert b'src="app.js"' in body and b"http" not in body.replace(b"http-equiv", b"")
    for asset in ("app.js", "app.css", "vendor/cytoscape.js", "vendor/cytoscape-fcose.js",
                  "vendor/cytoscape.LICENSE"):
        assert get(local + asset)[0] == 200, f"{asset} missing (scripts/fetch-web-assets.sh)"


def test_large_answers_are_gzipped_on_request(local: str) -> None:
    status, headers, body = get(local + "api/map", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body)) == shop.shop_snapshot().to_dict()


def test_node_graph_endpoints(local: str) -> None:
    fields = _json(local + "api/graph/fields")
    data = _json(local + "api/graph/data?namespace=shop")
    for kind in ("nodes", "edges"):
        names = {f["field_name"] for f in fields[f"{kind}_fields"]}
        for row in data[kind]:
            assert set(row) <= names, f"{kind} rows carry fields /api/graph/fields lacks"
    edge = next(e for e in data["edges"] if e["target"] == shop.INVENTORY)
    assert edge["secondarystat"] == 100.0 and edge["mainstat"] == 0.0


@pytest.mark.parametrize(("fmt", "content_type", "needle"), [
    ("json", "application/json", '"cluster": "test-cluster"'),
    ("dot", "text/vnd.graphviz", '"workload:shop/cart" -> "workload:shop/store"'),
    ("mermaid", "text/plain", "flowchart LR"),
])
def test_exports(local: str, fmt: str, content_type: str, needle: str) -> None:
    status, headers, body = get(local + f"api/export/{fmt}?namespace=shop")
    assert status == 200 and headers["Content-Type"].startswith(content_type)
    assert needle in body.decode()
    assert "198.51.100.7" not in body.decode()  # the namespace filter applies to exports


# --- through the API server's service proxy -------------------------------------------

def test_map_and_page_through_the_service_proxy(published: ProxiedMap) -> None:
    status, _, body = published.admin_get("api/map?namespace=shop")
    assert status == 200
    assert len(json.loads(body)["edges"]) == 6  # all but payments-v2 -> bank
    status, headers, body = published.admin_get("")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="app.js"' in body  # relative links survive the proxy prefix
    assert published.admin_get("vendor/cytoscape.js")[0] == 200
    assert published.admin_get("api/graph/fields")[0] == 200


def test_anonymous_users_are_not_let_through(published: ProxiedMap) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(published.control_plane.pki / "ca.crt"))
    status, _, _ = get(published.proxy_url + "api/map", context=context)
    assert status in (401, 403)


# --- the CLI --------------------------------------------------------------------------

def _cli(*args: str, kubeconfig: Path | None = None, check: bool = True,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [*CLI, *([f"--kubeconfig={kubeconfig}"] if kubeconfig else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, f"{argv} -> {result.returncode}: {result.stderr}"
    return result


def test_cli_map_table_sorted_by_traffic(published: ProxiedMap) -> None:
    out = _cli("map", kubeconfig=published.control_plane.admin_kubeconfig).stdout
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["SOURCE", "TARGET", "PORT", "CONN/S"]
    order = [line.split()[:2] for line in lines[1:]]
    assert order == [["shop/frontend", "shop/cart"], ["shop/frontend", "pay/payments"],
                     ["shop/cart", "shop/store"], ["shop/cart", "shop/inventory"],
                     ["shop/frontend", "203.0.113.10"], ["pay/payments-v2", "198.51.100.7"],
                     ["shop/frontend", "node-1"]]
    first = lines[1].split()
    assert first[2:] == ["7070/tcp", "10.0", "0.00", "0.0%", "20.0", "kB/s", "50.0", "kB/s",
                         "180µs", "950µs", "-", "-", "-"]  # no requests on it
    failing = lines[4].split()
    assert failing[3:6] == ["0.00", "0.75", "100.0%"]


def test_cli_filters_and_outputs(published: ProxiedMap) -> None:
    kc = published.control_plane.admin_kubeconfig
    data = json.loads(_cli("map", "--ns", "shop", "--probe", "shop/shop", "-o", "json",
                           kubeconfig=kc).stdout)
    assert {(e["source"], e["target"]) for e in data["edges"]} == {
        (shop.FRONTEND, shop.CART), (shop.CART, shop.STORE), (shop.FRONTEND, shop.PAYMENTS),
        (shop.FRONTEND, shop.EXTERNAL), (shop.CART, shop.INVENTORY)}
    dot = _cli("map", "--search", "payments", "-o", "dot", kubeconfig=kc).stdout
    assert dot.startswith('digraph "test-cluster"') and '"workload:pay/payments-v1"' in dot
    assert "shop/store" not in dot
    mermaid = _cli("map", "--min-rate", "4", "-o", "mermaid", kubeconfig=kc).stdout
    assert mermaid.startswith("flowchart LR") and mermaid.count("-->|") == 2
    wide = _cli("map", "-o", "wide", "--search", "inventory", kubeconfig=kc).stdout
    assert "45/0/0" in wide
    bad = _cli("map", "--window", "soon", kubeconfig=kc, check=False)
    assert bad.returncode == 2 and "window" in bad.stderr


def test_cli_watch_redraws(published: ProxiedMap) -> None:
    kc = published.control_plane.admin_kubeconfig
    proc = subprocess.Popen([*CLI, f"--kubeconfig={kc}", "map", "--watch", "--interval", "1"],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    frames: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while len(frames) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("Every 1s: traceprobe map"):
                frames.append(line)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert len(frames) == 2


def test_cli_context_and_kubeconfig_env(published: ProxiedMap, tmp_path: Path) -> None:
    config = yaml.safe_load(published.control_plane.admin_kubeconfig.read_text())
    # A second, unreachable cluster is the current context: only --context reaches ours.
    user = config["users"][0]["name"]
    config["clusters"].append({"name": "elsewhere",
                               "cluster": {"server": "https://127.0.0.1:9"}})
    config["contexts"].append({"name": "elsewhere",
                               "context": {"cluster": "elsewhere", "user": user}})
    config["current-context"] = "elsewhere"
    path = tmp_path / "two.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    failed = _cli("map", "--request-timeout", "3", env={"KUBECONFIG": str(path)}, check=False)
    assert failed.returncode == 1 and "cannot reach the API server" in failed.stderr
    out = _cli("--context", "test", "map", "--ns", "pay", env={"KUBECONFIG": str(path)}).stdout
    assert "pay/payments-v2" in out


def test_cli_names_a_missing_service_and_a_missing_permission(
        published: ProxiedMap, control_plane: Any) -> None:
    missing = _cli("-n", "nowhere", "map", kubeconfig=control_plane.admin_kubeconfig,
                   check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert "--map-service" in missing.stderr
    viewer = control_plane.serviceaccount_kubeconfig("default", "map-viewer")
    denied = _cli("map", kubeconfig=viewer, check=False)
    assert denied.returncode == 1 and "403" in denied.stderr and "services/proxy" in denied.stderr
    # The proxy authorises the name as requested, port included: "<service>:http".
    control_plane.kubectl("create", "role", "map-viewer", "-n", published.namespace,
                          "--verb=get", "--resource=services/proxy",
                          f"--resource-name={published.service}:http", check=False)
    control_plane.kubectl("create", "rolebinding", "map-viewer", "-n", published.namespace,
                          "--role=map-viewer", "--serviceaccount=default:map-viewer", check=False)
    deadline = time.monotonic() + 10  # RBAC caches settle within moments
    while (result := _cli("map", kubeconfig=viewer, check=False)).returncode != 0:
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.3)
    assert "shop/frontend" in result.stdout


# --- status ---------------------------------------------------------------------------

def _apply(cp: Any, obj: dict[str, Any], status: dict[str, Any]) -> None:
    cp.kubectl("apply", "--server-side", "-f", "-", input_text=yaml.safe_dump(obj))
    kind = obj["kind"].lower() + "s"
    namespace = obj["metadata"].get("namespace")
    cp.kubectl("patch", kind, obj["metadata"]["name"], *(["-n", namespace] if namespace else []),
               "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def _condition(status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2025-01-01T12:00:00Z", "observedGeneration": 1}


def test_cli_status_names_what_is_not_ready(control_plane: Any) -> None:
    cp = control_plane
    for path in sorted((REPO / "crds").glob("*.yaml")):
        cp.kubectl("apply", "-f", str(path))
    cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    cp.kubectl("create", "namespace", "cli-shop", check=False)
    group = "traceprobe.io/v1alpha1"
    _apply(cp, {"apiVersion": group, "kind": "TraceProbe",
                "metadata": {"name": "shop", "namespace": "cli-shop"}, "spec": {}},
           {"observedGeneration": 1, "nodesReady": "2/2",
            "conditions": [_condition("True", "AllNodesReady")]})
    _apply(cp, {"apiVersion": group, "kind": "ClusterTraceProbe",
                "metadata": {"name": "cli-platform"}, "spec": {}},
           {"observedGeneration": 1, "nodesReady": "1/2", "conditions": [_condition(
               "False", "NodesNotReady", "cli-node-b: TracepointMissing: tcp:tcp_probe")]})
    now = datetime.now(UTC)
    for node, heartbeat, entries in (
            ("cli-node-a", now, [
                ("TraceProbe", "cli-shop", "shop", "Attached", None, None),
                ("ClusterTraceProbe", None, "cli-platform", "Attached", None, None)]),
            ("cli-node-b", now - timedelta(minutes=5), [
                ("TraceProbe", "cli-shop", "shop", "Attached", None, None),
                ("ClusterTraceProbe", None, "cli-platform", "Degraded", "TracepointMissing",
                 "tcp:tcp_probe not found; RTT is not observed")])):
        _apply(cp, {"apiVersion": group, "kind": "NodeReport", "metadata": {"name": node},
                    "spec": {"nodeName": node}},
               {"agentVersion": "0.1.0", "probesAttached": "2/2",
                "heartbeatTime": heartbeat.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "probes": [{"probe": {"kind": kind, "name": name, "generation": 1,
                                      **({"namespace": ns} if ns else {})},
                            "state": state, **({"reason": reason} if reason else {}),
                            **({"message": message} if message else {})}
                           for kind, ns, name, state, reason, message in entries]})
    out = _cli("status", kubeconfig=cp.admin_kubeconfig).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["cli-shop/shop"][1:4] == ["TraceProbe", "True", "2/2"]
    assert rows["cli-platform"][1:4] == ["ClusterTraceProbe", "False", "1/2"]
    assert rows["cli-node-a"][1] == "True" and rows["cli-node-b"][1] == "False"
    assert ("ClusterTraceProbe cli-platform: NodesNotReady: cli-node-b: TracepointMissing:"
            " tcp:tcp_probe") in out
    assert "node cli-node-b: AgentNotReporting: no heartbeat for" in out
    assert ("node cli-node-b: cli-platform Degraded (TracepointMissing): tcp:tcp_probe not found;"
            " RTT is not observed") in out
    assert "cli-node-a:" not in out and "cli-shop/shop:" not in out
    data = json.loads(_cli("status", "-o", "json", kubeconfig=cp.admin_kubeconfig).stdout)
    ready = {n["node"]: n["ready"] for n in data["nodes"]}
    assert (ready["cli-node-a"], ready["cli-node-b"]) == ("True", "False")
