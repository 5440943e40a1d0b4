"""No payload bytes anywhere: a marker sent in the traffic appears in none of what
traceprobe produces — agent records, the map's API and exports, the OTLP the
Collector received — while the traffic itself is fully counted."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from harness import db_servers
from harness.db_servers import DB_TRAFFIC
from harness.install import apply_probe, install
from harness.map_world import MapWorld
from harness.pods import PodFactory
from harness.traffic_control import GRPC_TRAFFIC, dial, http_call, http_serve, serve, stop
from harness.waiting import wait_until


@pytest.fixture
def world(control_plane: Any, collector: Any, bpf_ready: None,
          tmp_path: Any) -> Iterator[tuple[MapWorld, PodFactory]]:
    install(control_plane)
    node = PodFactory(control_plane.api_client(), node="payload-node")
    w = MapWorld(control_plane, tmp_path)
    try:
        yield w, node
    finally:
        w.stop()
        node.cleanup()


def test_marker_in_traffic_is_in_no_output(world: tuple[MapWorld, PodFactory],
                                           collector: Any) -> None:
    w, node = world
    marker = f"TPSECRET{secrets.token_hex(8)}"
    client = node.create("leaky-1", "payload", owner=("Deployment", "leaky"))
    server_pod = node.create("sink-0", "payload", owner=("StatefulSet", "sink"))
    w.start_map(collector.grpc_endpoint)
    apply_probe(w.cp, "payload", "payload",
                "{interval: 1s, probes: [connections, bytes, dns, http, grpc, postgres, redis]}")
    w.start_agent("payload-node")
    server = serve(server_pod, 8443, 64)
    # HTTP parsed in the kernel: the marker in bodies both ways and in a request's path.
    web = http_serve(server_pod, 8080, "--marker", marker)
    # Statements and commands too: in keys, values, a statement and an error's message.
    pg, redis = db_servers.postgres(server_pod, 5432), db_servers.redis(server_pod, 6379)
    rpc = server_pod.popen([sys.executable, GRPC_TRAFFIC, "serve", "50051"],
                           stdout=subprocess.PIPE, text=True)
    assert rpc.stdout is not None and rpc.stdout.readline().strip() == "ready"
    try:
        wait_until(lambda: dial(client, server_pod.ip, 8443, 1) and any(
            e["target"] == "workload:payload/sink" for e in w.api_map()["edges"]),
            timeout=90, what="agent attached")
        truth = dial(client, server_pod.ip, 8443, 4096, "--count", "5", "--payload", marker)
        answers = http_call(client, server_pod.ip, 8080, "GET:/size/4096", "POST:/echo:4096",
                            f"GET:/{marker}", "--marker", marker)
        db = [json.loads(client.run([sys.executable, DB_TRAFFIC, *call]).stdout) for call in (
            ["pg", server_pod.ip, "5432", f"SELECT '{marker}'", f"SELECT * FROM {marker}"],
            ["redis", server_pod.ip, "6379", f"SET {marker} {marker}", f"GET {marker}"])]
        calls = json.loads(client.run([sys.executable, GRPC_TRAFFIC, "call", server_pod.ip,
                                       "50051", f"echo:{marker}", "status:5"]).stdout)
    finally:
        stop(server, web, rpc)
        pg.stop()
        redis.stop()
    assert [[r["outcome"] for r in calls] for calls in db] == [["00000", "42P01"],
                                                                ["OK", "OK"]]
    assert [c["status"] for c in calls] == [0, 5]
    assert truth["completed"] == 5 and truth["sent"] == 5 * 4096
    assert [a["status"] for a in answers] == [200, 200, 404]
    wait_until(lambda: collector.find("traceprobe.edge.bytes", **{
        "k8s.src.name": "leaky", "network.io.direction": "transmit"}), timeout=30,
        what="bytes exported")
    wait_until(lambda: sum(int(p.extra.get("count", 0)) for p in collector.find(
        "http.client.request.duration", **{"k8s.src.name": "leaky"})) >= 3, timeout=30,
        what="requests exported")
    base = f"http://127.0.0.1:{w.http_port}"
    outputs = {
        "collector": collector.output.read_text(),
        "agent log": "".join(a.log.read_text(errors="replace") for a in w.agents),
        "map log": w.map.log.read_text(errors="replace") if w.map else "",
    }
    for path in ("/api/map", "/api/graph/data", "/api/export/dot", "/api/export/mermaid",
                 "/metrics"):
        with urllib.request.urlopen(base + path, timeout=10) as response:
            outputs[path] = response.read().decode(errors="replace")
    leaks = [name for name, text in outputs.items() if marker in text]
    assert not leaks, f"payload bytes found in {leaks}"
    assert all(outputs.values()), "every output was read"
    edge = next(e for e in w.api_map()["edges"] if e["target"] == "workload:payload/sink"
                and e["port"] == 8443)
    assert edge["bytesSent"] >= 5 * 4096  # counted, not captured
    web_edge = next(e for e in w.api_map()["edges"] if e["target"] == "workload:payload/sink"
                    and e["port"] == 8080)
    assert web_edge["requests"][0]["byStatus"] == {"200": 2, "404": 1}
    by_port = {e["port"]: e.get("requests") for e in w.api_map()["edges"]
               if e["target"] == "workload:payload/sink"}
    assert by_port[5432][0]["byStatus"] == {"00000": 1, "42P01": 1}
    assert by_port[6379][0]["byMethod"] == {"GET": 1, "SET": 1}
    assert by_port[50051][0]["byStatus"] == {"NOT_FOUND": 1, "OK": 1}
