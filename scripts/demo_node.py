"""`make demo DEMO_ARGS=--real-node`: the shop as real pods on a real node.

A real kubelet, containerd + runc, kube-proxy and CoreDNS on this machine (the test
tier's node), `helm install` of charts/traceprobe with the images built here, a
ClusterTraceProbe applied with kubectl, and the shop as Deployments, a StatefulSet and
Services that call each other by their DNS names. Imported by scripts/demo.py, which
owns the command line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import node_shop as shop
from harness.node_release import ChartRelease, all_ready, apply, running
from harness.node_session import exclusive_node

SHOP, PAY = "shop", "pay"
CART = f"cart.{SHOP}.svc.cluster.local"
STORE = f"store-0.store.{SHOP}.svc.cluster.local"
PAYMENTS = f"payments.{PAY}.svc.cluster.local"
EXPECTED_EDGES = {
    (f"workload:{SHOP}/frontend", f"service:{SHOP}/cart", 80),
    (f"workload:{SHOP}/cart", f"workload:{SHOP}/store", 5432),
    (f"workload:{SHOP}/cart", f"service:{PAY}/payments", 80),
    (f"workload:{SHOP}/frontend", f"workload:{SHOP}/store", 6379),  # refused
}


def _calls(*dials: list[str]) -> list[str]:
    """One container running several endless dial loops (each a traffic.py dial)."""
    loops = " & ".join(" ".join(d) for d in dials)
    return ["sh", "-c", f"{loops} & wait"]


def _forever(host: str, port: int, request: int, every: float) -> list[str]:
    return shop.dial(host, port, request, "--count", "0", "--every", str(every),
                     "--timeout", "2")


def manifests(image: str) -> list[dict[str, Any]]:
    payments = {"service": "payments"}
    return [
        shop.namespace(SHOP), shop.namespace(PAY),
        shop.traffic_configmap(SHOP), shop.traffic_configmap(PAY),
        shop.cluster_probe("demo", [SHOP, PAY]),
        shop.statefulset("store", SHOP, image, shop.serve(5432, 2000), 5432),
        shop.service("store", SHOP, 5432, 5432, headless=True),
        shop.deployment("cart", SHOP, image, _calls(
            shop.serve(8080, 300), _forever(STORE, 5432, 200, 0.3),
            _forever(PAYMENTS, 80, 200, 1.0)), replicas=2, port=8080),
        shop.service("cart", SHOP, 80, 8080),
        shop.deployment("frontend", SHOP, image, _calls(
            _forever(CART, 80, 200, 0.5), _forever(STORE, 6379, 1, 1.0))),
        shop.deployment("payments-v1", PAY, image, shop.serve(8080, 50), port=8080,
                        labels=payments),
        shop.deployment("payments-v2", PAY, image, shop.serve(8080, 50), port=8080,
                        labels=payments),
        shop.service("payments", PAY, 80, 8080, selector=payments),
    ]


def _drawn(release: ChartRelease) -> set[tuple[str, str, int]]:
    try:
        return {(e["source"], e["target"], e["port"]) for e in release.api_map()["edges"]}
    except (OSError, ValueError):
        return set()


def run(args: argparse.Namespace, stop: threading.Event, say: Callable[[str], None],
        screenshot: Callable[[str, Path], None]) -> int:
    started = time.monotonic()
    # The test world's prefix: cleanup_stale() knows a killed run's mounts by it.
    work = Path(tempfile.mkdtemp(prefix="traceprobe-world-demo-"))
    try:
        say("starting a real node: kube-apiserver, kubelet, containerd, kube-proxy, CoreDNS")
        with exclusive_node(work) as node:
            say(f"node {node.name} Ready in {node.timings['start_total']:.0f}s; "
                f"kubectl --kubeconfig {node.cp.admin_kubeconfig} get pods -A")
            release = ChartRelease(node, "demo")
            try:
                say("helm install traceprobe charts/traceprobe (images built here)")
                release.install()
                say("kubectl apply: a ClusterTraceProbe and the shop (namespaces shop, pay)")
                apply(node, *manifests(node.image("workload")))
                url = release.map_url()
                say(f"service map view: {url}/   (API: {url}/api/map)")
                say("waiting for the first edges...")
                deadline = time.monotonic() + 240
                while not _drawn(release) and time.monotonic() < deadline \
                        and not stop.is_set():
                    stop.wait(1)
                pods = [p for ns in (SHOP, PAY) for p in running(node, ns, "app")]
                say(f"first edges {time.monotonic() - started:.0f}s after start; "
                    f"{len(pods)} shop pods, all ready: {all_ready(pods)}")
                say("live. Ctrl-C removes everything.")
                if args.screenshot:
                    time.sleep(10)
                    screenshot(f"{url}/", Path(args.screenshot))
                    say(f"screenshot saved to {args.screenshot}")
                stop.wait(args.seconds or None)
                drawn = _drawn(release)
                say(f"stopping ({len(drawn)} edges on the map)")
                if args.print_map:
                    print(json.dumps(release.api_map(), indent=1))
                missing = EXPECTED_EDGES - drawn
                for source, target, port in sorted(missing):
                    say(f"missing from the map: {source} -> {target}:{port}")
                return 1 if missing else 0
            finally:
                say("helm uninstall; stopping the node")
                release.uninstall()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        say("removed everything the demo made")
