"""`make demo`: the whole product on this one machine, until Ctrl-C.

A real kube-apiserver + etcd, the chart's CRDs and a sample probe applied with
kubectl, the operator, one node agent (real eBPF), the service map, and a small
shop of simulated pods (network namespaces) in two namespaces talking to each
other, to a payments Service with two backends, to a partner outside the
cluster (looked up in DNS first, so the map names it), plus one call that
always fails. Prints the map's URL; Ctrl-C (or SIGTERM) removes everything it
made. `--real-node`: the same kind of shop as real pods on a real node, the
product installed with helm (scripts/demo_node.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the test world's parts are the demo's parts

from harness import pods as pods_mod  # noqa: E402
from harness import procs  # noqa: E402
from harness import services as services_mod  # noqa: E402
from harness.controlplane import ControlPlane  # noqa: E402
from harness.install import install  # noqa: E402
from harness.map_world import MapWorld  # noqa: E402
from harness.pods import PodFactory  # noqa: E402
from harness.services import ServiceFactory  # noqa: E402
from harness.traffic_control import HTTP_TRAFFIC, PY, TRAFFIC, http_serve, serve  # noqa: E402
from harness.world import OperatorWorld  # noqa: E402

NODE = "demo-node-1"
PARTNER = "api.partner.example"
DNS = str(REPO / "tests" / "harness" / "dns_server.py")
PROBE = REPO / "scripts" / "demo-probe.yaml"
# The shop's calls as the map must draw them: (source, target, port).
EXPECTED_EDGES = {
    ("workload:shop/frontend", "service:shop/cart", 80),
    ("workload:shop/cart", "workload:shop/store", 5432),
    ("workload:shop/cart", "service:pay/payments", 80),
    ("workload:shop/frontend", "workload:shop/store", 6379),  # refused: nothing listens
    ("workload:pay/payments-v1", f"external:{PARTNER}", 443),
    ("workload:pay/payments-v2", f"external:{PARTNER}", 443),
}


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def _dialer(pod: Any, host: str, port: int, every: float, request: int = 200) -> Any:
    return pod.popen([PY, TRAFFIC, "dial", host, str(port), str(request), "--count", "0",
                      "--every", str(every), "--timeout", "2"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _end_all(running: list[subprocess.Popen[Any]]) -> None:
    for proc in running:
        proc.kill()
        proc.wait()


def _missing_edges(snapshot: dict[str, Any]) -> set[tuple[str, str, int]]:
    drawn = {(e["source"], e["target"], e["port"]) for e in snapshot["edges"]}
    return EXPECTED_EDGES - drawn


def _wait_for_map(world: MapWorld, seconds: float, stop: threading.Event) -> int:
    """Edges on the map once the first of the shop's calls shows (or at the deadline)."""
    deadline = time.monotonic() + seconds
    edges = 0
    while time.monotonic() < deadline and not stop.is_set():
        try:
            edges = len(world.api_map()["edges"])
        except OSError:
            edges = 0
        if edges:
            return edges
        stop.wait(1)
    return edges


def _screenshot(url: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 860})
        page.goto(url)
        page.wait_for_timeout(6000)  # a refresh or two and the layout settles
        page.screenshot(path=str(path))
        browser.close()


def run(args: argparse.Namespace, stop: threading.Event) -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="traceprobe-demo-"))
    cleanups: list[Any] = []
    try:
        if procs.claim_run():  # alone: a dead run's leftovers may be reaped
            procs.reap_stale_processes()
            pods_mod.cleanup_stale()
            services_mod.cleanup_stale()
        say("starting etcd + kube-apiserver (RBAC on)")
        cp = ControlPlane(work / "controlplane")
        cleanups.append(cp.stop)
        cp.start()
        say("applying CRDs and RBAC with kubectl")
        install(cp)
        cp.kubectl("apply", "-f", str(PROBE))
        say("starting the operator, the service map and a node agent")
        operators = OperatorWorld(cp, work)
        cleanups.append(operators.stop)
        operators.start_operator()
        world = MapWorld(cp, work)
        cleanups.append(world.stop)
        world.start_map(None, "--window-seconds", "120", cluster="demo")
        say("creating the shop: pods in network namespaces, Services via iptables DNAT")
        node = PodFactory(cp.api_client(), node=NODE)
        cleanups.append(node.cleanup)
        cp.kubectl("label", "node", NODE, "kubernetes.io/os=linux", "--overwrite")
        services = ServiceFactory(cp.api_client())
        cleanups.append(services.cleanup)
        frontend = node.create("frontend-6d9c-qx7", "shop", owner=("Deployment", "frontend"))
        cart = node.create("cart-58f-k2", "shop", owner=("Deployment", "cart"))
        store = node.create("store-0", "shop", owner=("StatefulSet", "store"))
        pay_a = node.create("payments-v1-7c-a", "pay", {"app": "payments"},
                            ("Deployment", "payments-v1"))
        pay_b = node.create("payments-v2-9f-b", "pay", {"app": "payments"},
                            ("Deployment", "payments-v2"))
        partner = node.create_external("partner-api")
        dns = node.create_external("dns")  # the partner's name server, outside the cluster
        cart_svc = services.create("cart", "shop", [cart], 80, 8080)
        pay_svc = services.create("payments", "pay", [pay_a, pay_b], 80, 8080)
        world.start_agent(NODE)
        # The cart speaks HTTP: the map shows its requests, statuses and latency too.
        running = [http_serve(cart, 8080), serve(store, 5432, 2000), serve(pay_a, 8080, 50),
                   serve(pay_b, 8080, 50), serve(partner, 443, 4000),
                   dns.popen([PY, DNS, "serve", "53", f"{PARTNER}={partner.ip}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        running += [
            frontend.popen(["sh", "-c", f"while :; do {PY} {HTTP_TRAFFIC} call "
                            f"{cart_svc.cluster_ip} 80 GET:/size/300 GET:/size/1200 "
                            "POST:/echo:500 GET:/status/404 >/dev/null; sleep 0.5; done"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            _dialer(cart, store.ip, 5432, 0.3),
            _dialer(cart, pay_svc.cluster_ip, 80, 1.0),
            _dialer(frontend, store.ip, 6379, 1.0),  # the failing call: nothing listens
        ]
        cleanups.append(lambda: _end_all(running))
        url = f"http://127.0.0.1:{world.http_port}/"
        say(f"service map view: {url}   (API: {url}api/map)")
        say("waiting for the first edges (the agent compiles its BPF program first)...")
        edges = _wait_for_map(world, 120, stop)
        say(f"first edges {time.monotonic() - started:.0f}s after start")
        # Now that the agent watches: payments look the partner up, as apps do, then
        # call the address they got; the map names that peer by the DNS answer.
        for pod in (pay_a, pay_b):
            pod.run([PY, DNS, "resolve", dns.ip, PARTNER])
            running.append(pod.popen(["sh", "-c", f"while :; do sleep 20; {PY} {DNS} resolve "
                                      f"{dns.ip} {PARTNER}; done"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            running.append(_dialer(pod, partner.ip, 443, 2.0))
        say(f"live: {edges} edges on the map so far. Ctrl-C removes everything.")
        if args.screenshot:
            time.sleep(10)
            _screenshot(url, Path(args.screenshot))
            say(f"screenshot saved to {args.screenshot}")
        if args.seconds:
            stop.wait(args.seconds)
        else:
            stop.wait()
        summary = world.api_map()
        say(f"stopping ({len(summary['edges'])} edges, {len(summary['nodes'])} nodes on the map)")
        for edge in summary["edges"]:
            for r in edge.get("requests", []):
                say(f"requests {edge['source']} -> {edge['target']}: {r['requests']} "
                    f"{r['protocol']}, {r['errors']} errors, by status {r['byStatus']}")
        if args.print_map:
            print(json.dumps(summary, indent=1))
        missing = _missing_edges(summary)
        for source, target, port in sorted(missing):
            say(f"missing from the map: {source} -> {target}:{port}")
        return 1 if missing else 0
    finally:
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as exc:  # keep removing the rest
                say(f"cleanup step failed: {exc}")
        shutil.rmtree(work, ignore_errors=True)
        say("removed everything the demo made")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=0, help="stop by itself after this long")
    p.add_argument("--screenshot", help="save a screenshot of the map view (PNG) once live")
    p.add_argument("--print-map", action="store_true", help="print /api/map when stopping")
    p.add_argument("--real-node", action="store_true",
                   help="run the shop as real pods on a real node, the product from "
                        "`helm install` (slower; make setup builds the node's tools)")
    args = p.parse_args()
    if args.seconds < 0:
        p.error(f"--seconds must be 0 (until Ctrl-C) or more, not {args.seconds:g}")
    if os.geteuid() != 0:
        print("the demo needs root: network namespaces, iptables and BPF", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.real_node:
        import demo_node

        return demo_node.run(args, stop, say, _screenshot)
    return run(args, stop)


if __name__ == "__main__":
    sys.exit(main())
