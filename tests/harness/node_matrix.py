"""The real node's traffic matrix (tests/node/test_traffic_matrix*.py): its workloads as
manifests, the calls it makes and what they did (the truth: the traffic generator,
tests/harness/traffic.py and http_traffic.py, and the peers each server logged), and the
edges of it the map draws.

    matrix/frontend (Deployment) ──80──► Service matrix/api ⇢ matrix/api (2 pods),
                                                             matrix/api-canary (1 pod)
    matrix/frontend ──5432──► matrix-data/store (StatefulSet, by its headless DNS name)
    matrix/frontend ──5433──► matrix-data/store: refused
    matrix/frontend ──80──► Service matrix/flaky: every connection reset
    matrix/hostnet (hostNetwork Deployment) ──80──► Service matrix/api
    matrix/batch (Job) ──80──► Service matrix/api
    matrix/frontend ──5353/udp──► matrix-data/names (datagrams to its pod IP)
    matrix/frontend ──80──► Service matrix/catalog ⇢ matrix/catalog: HTTP requests
    matrix/frontend ──5432──► Service matrix-data/ledger: PostgreSQL statements
    matrix/frontend ──6379──► Service matrix-data/cache: Redis commands
    matrix/frontend ──50051──► Service matrix/pricing: gRPC calls
    between two rounds the frontend pod and one api pod are deleted and replaced.
The probe counts UDP too: the frontend's lookups at CoreDNS are a UDP edge of their own;
and HTTP requests, which the catalog's real HTTP server answered, and the statements and
commands real PostgreSQL and Redis servers answered (Debian's clients: psycopg2's simple
protocol, redis-py), and the calls a grpcio server answered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import node_shop as shop
from harness.collector import Collector
from harness.node import RealNode
from harness.node_release import ChartRelease, all_ready, apply, running
from harness.waiting import wait_until
from traceprobe_api.probe import DEFAULT_KINDS

CLUSTER = "node-matrix"
APP, DATA = "matrix", "matrix-data"
API = f"api.{APP}.svc.cluster.local"
STORE = f"store-0.store.{DATA}.svc.cluster.local"
FLAKY = f"flaky.{APP}.svc.cluster.local"
FRONTEND, HOSTNET, BATCH = (f"workload:{APP}/{n}" for n in ("frontend", "hostnet", "batch"))
API_SVC, FLAKY_SVC = f"service:{APP}/api", f"service:{APP}/flaky"
CATALOG = f"catalog.{APP}.svc.cluster.local"
CATALOG_SVC = f"service:{APP}/catalog"
LEDGER, CACHE = f"ledger.{DATA}.svc.cluster.local", f"cache.{DATA}.svc.cluster.local"
LEDGER_SVC, CACHE_SVC = f"service:{DATA}/ledger", f"service:{DATA}/cache"
LEDGER_CALLS = ["CREATE TABLE items (id int PRIMARY KEY)", "INSERT INTO items VALUES (1)",
                "INSERT INTO items VALUES (1)", "SELECT * FROM items", "SELECT * FROM nowhere",
                "SELECT generate_series(1, 5000)", "DELETE FROM items"]
CACHE_CALLS = ["SET visits 1", "INCR visits", "GET visits", "HSET cart sku 2",
               "INCR cart", "LPUSH recent a b c", "LRANGE recent 0 -1", "GET nothing"]
PRICING = f"pricing.{APP}.svc.cluster.local"
PRICING_SVC = f"service:{APP}/pricing"
PRICING_CALLS = [f"status:{code}" for code in (0, 0, 5, 0, 14, 0, 5, 0)]
CATALOG_CALLS = ["GET:/size/300"] * 6 + ["GET:/status/404"] * 2 + ["POST:/echo:20000"] * 2 \
    + ["GET:/status/500"]
BACKENDS_OF_API = {f"workload:{APP}/api": "api", f"workload:{APP}/api-canary": "api-canary"}
STORE_POD = f"workload:{DATA}/store"
NAMES_POD = f"workload:{DATA}/names"
UDP_SIZES = [40, 512, 1400, 3000]  # DNS-like, and one past the MTU
WARMUP = f"workload:{APP}/warmup"
PODS = 9  # running in APP: api x2, api-canary, flaky, frontend, warmup, hostnet, catalog,
# pricing


def _manifests(image: str) -> list[dict[str, Any]]:
    idle = shop.IDLE
    return [
        shop.namespace(APP), shop.namespace(DATA),
        shop.traffic_configmap(APP), shop.traffic_configmap(DATA),
        shop.cluster_probe("matrix", [APP, DATA],
                           probes=[*DEFAULT_KINDS, "udp", "http", "grpc", "postgres",
                                   "redis"]),
        shop.deployment("api", APP, image, shop.serve(8080, 100), replicas=2, port=8080,
                        labels={"tier": "api"}),
        shop.deployment("api-canary", APP, image, shop.serve(8080, 100), port=8080,
                        labels={"tier": "api"}),
        shop.service("api", APP, 80, 8080, selector={"tier": "api"}),
        shop.deployment("flaky", APP, image, shop.serve(8081, 0, "--reset"), port=8081),
        shop.service("flaky", APP, 80, 8081),
        shop.statefulset("store", DATA, image, shop.serve(5432, 50), 5432),
        shop.service("store", DATA, 5432, 5432, headless=True),
        shop.deployment("names", DATA, image, shop.udp_echo(5353), port=5353),
        shop.deployment("catalog", APP, image, shop.http_serve(8080), port=8080),
        shop.deployment("pricing", APP, image, shop.grpc_serve(50051), port=50051),
        shop.service("pricing", APP, 50051, 50051),
        shop.deployment("ledger", DATA, image, shop.db_serve("pg", 5432), port=5432),
        shop.service("ledger", DATA, 5432, 5432),
        shop.deployment("cache", DATA, image, shop.db_serve("redis", 6379), port=6379),
        shop.service("cache", DATA, 6379, 6379),
        shop.service("catalog", APP, 80, 8080),
        shop.deployment("frontend", APP, image, idle),
        shop.deployment("warmup", APP, image, idle),
        shop.deployment("hostnet", APP, image, idle, host_network=True),
    ]


@dataclass
class Matrix:
    node: RealNode
    release: ChartRelease
    collector: Collector
    truth: dict[str, dict[str, Any]] = field(default_factory=dict)
    split: dict[str, int] = field(default_factory=dict)  # api workload -> accepted
    peers: list[str] = field(default_factory=list)  # addresses the api servers saw
    udp: dict[str, Any] = field(default_factory=dict)  # udp-call's bytes each way
    http: list[dict[str, Any]] = field(default_factory=list)  # each request and its status
    db: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # pg/redis: outcomes
    grpc: list[dict[str, Any]] = field(default_factory=list)  # each call and its status
    _logs: dict[str, str] = field(default_factory=dict)  # pod -> its log, deleted ones too

    def pod(self, app: str, ns: str = APP) -> str:
        (name,) = [str(p["metadata"]["name"]) for p in running(self.node, ns, f"app={app}")]
        return name

    def dial(self, app: str, host: str, port: int, request: int, *extra: str
             ) -> dict[str, Any]:
        """Run the generator in the app's pod; its JSON line is the truth."""
        return self.run(app, shop.dial(host, port, request, *extra))

    def run(self, app: str, command: list[str]) -> dict[str, Any]:
        out = self.node.kubectl("exec", "-n", APP, self.pod(app), "--", *command).stdout
        return dict(json.loads(out))

    def keep_logs(self, app: str) -> None:
        for pod in running(self.node, APP, f"app={app}"):
            name = pod["metadata"]["name"]
            self._logs[name] = self.node.kubectl("logs", "-n", APP, name).stdout

    def accepted(self, app: str) -> list[str]:
        """Peers accepted by every pod the workload has had (pod names start with it)."""
        return [p for pod, log in self._logs.items()
                if pod.rsplit("-", 2)[0] == app for p in shop.peers(log)]


def _ready(node: RealNode, ns: str, count: int) -> bool:
    pods = running(node, ns, "app")
    return len(pods) == count and all_ready(pods)


def _run_matrix(m: Matrix, image: str) -> None:
    node = m.node
    # The agent attached and the map names the pods: a warm-up call shows on the map.
    def warm() -> bool:
        m.dial("warmup", STORE, 5432, 1)
        return any(e["source"] == WARMUP for e in m.release.api_map()["edges"])

    wait_until(warm, 180, "the agent attached and the map naming pods", diagnose=m.release.diagnose)
    time.sleep(3)  # the warm-up's last calls are flushed; count from here
    m.truth["api-1"] = m.dial("frontend", API, 80, 120, "--count", "4")
    m.truth["store"] = m.dial("frontend", STORE, 5432, 200, "--count", "3")
    m.truth["refused"] = m.dial("frontend", STORE, 5433, 1, "--count", "2")
    m.truth["reset"] = m.dial("frontend", FLAKY, 80, 100, "--count", "2", "--hold", "0.3")
    m.truth["hostnet"] = m.dial("hostnet", API, 80, 30, "--count", "3")
    (names,) = running(node, DATA, "app=names")
    m.udp = m.run("frontend", shop.udp_call(names["status"]["podIP"], 5353, UDP_SIZES))
    m.http = json.loads(node.kubectl("exec", "-n", APP, m.pod("frontend"), "--",
                                     *shop.http_call(CATALOG, 80, *CATALOG_CALLS)).stdout)
    m.grpc = json.loads(node.kubectl("exec", "-n", APP, m.pod("frontend"), "--",
                                     *shop.grpc_call(PRICING, 50051, *PRICING_CALLS)).stdout)
    for system, host, port, calls in (("pg", LEDGER, 5432, LEDGER_CALLS),
                                      ("redis", CACHE, 6379, CACHE_CALLS)):
        m.db[system] = json.loads(node.kubectl("exec", "-n", APP, m.pod("frontend"), "--",
                                               *shop.db_call(system, host, port, *calls)).stdout)
    # A pod deleted and replaced: the frontend and one api pod get successors.
    old = {m.pod("frontend"), running(node, APP, "app=api")[0]["metadata"]["name"]}
    m.keep_logs("api")
    node.kubectl("delete", "pod", "-n", APP, "--wait=false", *old)
    wait_until(lambda: _ready(node, APP, PODS) and not old & {
        p["metadata"]["name"] for p in running(node, APP, "app")}, 120, "the replacements ready",
        diagnose=node.diagnose_pods)
    m.truth["api-2"] = m.dial("frontend", API, 80, 120, "--count", "4")
    apply(node, shop.job("batch", APP, image, shop.dial(API, 80, 10, "--count", "3")))
    node.kubectl("wait", "-n", APP, "--for=condition=complete", "job/batch", "--timeout=50s")
    m.truth["batch"] = json.loads(node.kubectl("logs", "-n", APP, "job/batch").stdout)
    for app in BACKENDS_OF_API.values():
        m.keep_logs(app)
        m.split[app] = len(m.accepted(app))
        m.peers += m.accepted(app)


@contextmanager
def running_matrix(real_node: RealNode, world_dir: Path) -> Iterator[Matrix]:
    """The matrix installed, run and checked against, then removed."""
    collector = Collector(world_dir / "matrix-collector", host=real_node.node_ip)
    collector.start()
    release = ChartRelease(real_node, CLUSTER)
    m = Matrix(real_node, release, collector)
    try:
        release.install(f"serviceMap.export.endpoint={collector.grpc_endpoint}",
                        "serviceMap.export.intervalSeconds=2")
        image = real_node.image("workload")
        apply(real_node, *_manifests(image))
        wait_until(lambda: _ready(real_node, APP, PODS) and _ready(
            real_node, DATA, 4), 180, "the matrix pods ready", diagnose=real_node.diagnose_pods)
        _run_matrix(m, image)
        yield m
    finally:
        release.uninstall()
        real_node.kubectl("delete", "namespace", APP, DATA, "--wait=false", check=False)
        collector.stop()


def ours(edge: dict[str, Any]) -> bool:
    """Edges that touch the matrix's pods, the warm-up's aside."""
    ends = (edge["source"], edge["target"])
    return WARMUP not in ends and any(f":{APP}/" in e or f":{DATA}/" in e for e in ends)


def drawn(matrix: Matrix, transport: str = "tcp") -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(e["source"], e["target"], e["port"]): e
            for e in matrix.release.api_map()["edges"]
            if ours(e) and e["transport"] == transport}
