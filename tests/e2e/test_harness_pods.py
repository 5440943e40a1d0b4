"""Netns pods are real: own addresses, own cgroup, registered as Pods, reachable by IP."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from kubernetes import client

from harness.pods import cgroup2_root

SERVER = ["python3", "-c", """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(); print('ready', flush=True)
for _ in range(2):
    c, peer = s.accept(); c.sendall(('hello ' + peer[0]).encode()); c.close()
"""]
CLIENT = ["python3", "-c", """
import socket, sys
print(socket.create_connection((sys.argv[1], 8080), timeout=5).recv(100).decode())
"""]


def test_pod_a_reaches_pod_b_by_ip(control_plane: Any, pod_factory: Any) -> None:
    a = pod_factory.create("client-0", "harness", owner=("Deployment", "client"))
    b = pod_factory.create("server-0", "harness", owner=("StatefulSet", "server"))
    assert a.ip != b.ip and a.cgroup_id != b.cgroup_id

    server = b.popen([*SERVER, "::"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        # The server sees the client's own pod IP: no NAT between pods.
        assert a.run([*CLIENT, b.ip]).stdout.strip() == f"hello ::ffff:{a.ip}"
        assert a.run([*CLIENT, b.ip6]).stdout.strip() == f"hello {a.ip6}"
    finally:
        server.kill()
        server.wait()


def test_processes_run_in_the_pod_cgroup(pod_factory: Any) -> None:
    pod = pod_factory.create("cg-0", "harness")
    inside = pod.run(["cat", "/proc/self/cgroup"]).stdout
    rel = "/" + str(pod.cgroup.relative_to(cgroup2_root()))
    assert f"0::{rel}" in inside.splitlines()
    netns = pod.run(["ip", "-o", "addr", "show", "dev", "eth0"]).stdout
    assert f"{pod.ip}/32" in netns


def test_pod_objects_carry_owner_chain_and_status(control_plane: Any, pod_factory: Any) -> None:
    pod = pod_factory.create("web-abc12", "harness", owner=("Deployment", "web"))
    core = client.CoreV1Api(control_plane.api_client())
    apps = client.AppsV1Api(control_plane.api_client())
    obj = core.read_namespaced_pod("web-abc12", "harness")
    assert obj.spec.node_name == "node-1" and obj.status.phase == "Running"
    assert obj.status.pod_ip == pod.ip and obj.status.host_ip == pod_factory.node_ip
    (rs_ref,) = obj.metadata.owner_references
    assert rs_ref.kind == "ReplicaSet"
    rs = apps.read_namespaced_replica_set(rs_ref.name, "harness")
    assert rs.metadata.owner_references[0].kind == "Deployment"
    assert rs.metadata.owner_references[0].name == "web"
    cron_pod = pod_factory.create("nightly-1-x", "harness", owner=("CronJob", "nightly"))
    job_ref = core.read_namespaced_pod(cron_pod.name, "harness").metadata.owner_references[0]
    job = client.BatchV1Api(control_plane.api_client()).read_namespaced_job(job_ref.name, "harness")
    assert job.metadata.owner_references[0].kind == "CronJob"


def test_teardown_removes_netns_and_cgroup(control_plane: Any) -> None:
    from harness.pods import PodFactory

    factory = PodFactory(control_plane.api_client(), node="node-teardown")
    pod = factory.create("gone-0", "harness")
    sleeper = pod.popen(["sleep", "300"])
    factory.cleanup()
    assert sleeper.wait(5) != 0  # killed with its cgroup
    assert str(pod.netns) not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                           text=True).stdout
    assert not os.path.exists(pod.cgroup)
