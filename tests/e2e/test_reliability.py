"""Failure behaviour on real parts: the API server away (agents and the map keep
naming from their caches, then resync) and a connection map that fills up
(drops counted, the probe Degraded with the reason)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.controlplane import ControlPlane
from harness.install import apply_probe, install
from harness.map_world import MapWorld
from harness.pods import PodFactory
from harness.traffic_control import dial, serve, stop
from harness.waiting import wait_until
from harness.world import GROUP, VERSION


@pytest.fixture
def own_cp(world_dir: Any, bpf_ready: None) -> Iterator[ControlPlane]:
    """A control plane of this test's own: it is taken down on purpose."""
    cp = ControlPlane(world_dir / f"cp-outage-{time.monotonic_ns()}")
    try:
        cp.start()
        install(cp)
        yield cp
    finally:
        cp.stop()


def _edge(world: MapWorld, source: str, target: str) -> dict[str, Any] | None:
    try:
        edges = world.api_map()["edges"]
    except OSError:
        return None
    return next((e for e in edges if e["source"] == source and e["target"] == target), None)


def test_api_server_down_agents_and_map_keep_naming_then_resync(
        own_cp: ControlPlane, tmp_path: Any) -> None:
    node = PodFactory(own_cp.api_client(), node="outage-node")
    world = MapWorld(own_cp, tmp_path)
    try:
        web = node.create("web-1", "shop", owner=("Deployment", "web"))
        db = node.create("db-0", "shop", owner=("StatefulSet", "db"))
        world.start_map(None)
        apply_probe(own_cp, "outage", "shop", "{interval: 1s}")
        world.start_agent("outage-node")
        server = serve(db, 5432, 10)
        try:
            wait_until(lambda: dial(web, db.ip, 5432, 1) and _edge(
                world, "workload:shop/web", "workload:shop/db"), timeout=90,
                what="named edge before the outage")
            argv = own_cp.stop_apiserver()
            before = (_edge(world, "workload:shop/web", "workload:shop/db") or {})["connections"]
            assert dial(web, db.ip, 5432, 1, "--count", "4")["completed"] == 4
            during = wait_until(lambda: (e := _edge(world, "workload:shop/web",
                                                    "workload:shop/db"))
                                and e["connections"] >= before + 4 and e, timeout=30,
                                what="edges still named while the API server is down")
            assert during["observedBy"] == ["client", "server"]
            own_cp.start_apiserver(argv)
            # After the outage, new objects are seen again (watches resynced).
            cache = node.create("cache-0", "shop", owner=("StatefulSet", "cache"))
            cache_server = serve(cache, 6379, 10)
            try:
                wait_until(lambda: dial(web, cache.ip, 6379, 1) and _edge(
                    world, "workload:shop/web", "workload:shop/cache"), timeout=90,
                    what="a pod created after the outage is named")
            finally:
                stop(cache_server)
            report = own_cp.api_client()
            from kubernetes import client

            custom = client.CustomObjectsApi(report)
            beat = custom.get_cluster_custom_object(GROUP, VERSION, "nodereports",
                                                    "outage-node")["status"]["heartbeatTime"]
            wait_until(lambda: custom.get_cluster_custom_object(
                GROUP, VERSION, "nodereports", "outage-node")["status"]["heartbeatTime"] != beat,
                timeout=30, what="the agent's NodeReport heartbeat resumes")
        finally:
            stop(server)
        assert all(p.alive() for p in [*world.agents, world.map] if p), "nothing crashed"
    finally:
        world.stop()
        node.cleanup()


def test_full_connection_map_counts_drops_and_degrades_the_probe(
        control_plane: Any, bpf_ready: None, tmp_path: Any) -> None:
    install(control_plane)
    node = PodFactory(control_plane.api_client(), node="full-node")
    world = MapWorld(control_plane, tmp_path)
    from kubernetes import client

    custom = client.CustomObjectsApi(control_plane.api_client())

    def entry() -> dict[str, Any]:
        try:
            report = custom.get_cluster_custom_object(GROUP, VERSION, "nodereports", "full-node")
        except client.exceptions.ApiException:
            return {}
        return next((e for e in (report.get("status") or {}).get("probes") or []
                     if e["probe"]["name"] == "small"), {})

    try:
        web = node.create("web-1", "full", owner=("Deployment", "web"))
        db = node.create("db-0", "full", owner=("StatefulSet", "db"))
        world.start_map(None)
        apply_probe(control_plane, "small", "full",
                    "{interval: 1s, limits: {maxConnections: 1024}}")
        world.start_agent("full-node")
        wait_until(lambda: entry().get("state") == "Attached", timeout=90, what="attached")
        server = serve(db, 5432, 10)
        try:
            # 700 connections held at once: 1400 sockets on this node > 1024 entries.
            truth = dial(web, db.ip, 5432, 10, "--count", "700", "--parallel", "700",
                         "--hold", "3")
        finally:
            stop(server)
        assert truth["completed"] == 700  # traffic is never held up by the agent
        degraded = wait_until(lambda: entry().get("reason") == "MapFull" and entry(),
                              timeout=30, what="Degraded with MapFull")
        assert degraded["state"] == "Degraded"
        assert degraded["drops"]["conn_map_full"] > 0
        assert "spec.limits.maxConnections" in degraded["message"]
    finally:
        world.stop()
        node.cleanup()
        control_plane.kubectl("delete", "traceprobes", "--all", "-n", "full", "--wait=false",
                              check=False)
