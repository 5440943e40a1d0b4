"""kube-proxy-style ClusterIP: the client dials the ClusterIP, a backend answers."""

from __future__ import annotations

import subprocess
from typing import Any

from kubernetes import client

ECHO = ["python3", "-c", """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 9090)); s.listen(); print('ready', flush=True)
while True:
    c, peer = s.accept(); c.sendall((sys.argv[1] + ' ' + peer[0]).encode()); c.close()
"""]
DIAL = ["python3", "-c", """
import socket, sys
for _ in range(int(sys.argv[2])):
    print(socket.create_connection((sys.argv[1], 80), timeout=5).recv(100).decode())
"""]


def test_client_reaches_backends_via_cluster_ip(control_plane: Any, pod_factory: Any,
                                                 service_factory: Any) -> None:
    client_pod = pod_factory.create("frontend-0", "shop", owner=("Deployment", "frontend"))
    backends = [pod_factory.create(f"payments-{i}", "shop", labels={"app": "payments"},
                                   owner=("Deployment", "payments")) for i in range(2)]
    servers = [b.popen([*ECHO, b.name], stdout=subprocess.PIPE, text=True) for b in backends]
    try:
        for s in servers:
            assert s.stdout is not None and s.stdout.readline().strip() == "ready"
        svc = service_factory.create("payments", "shop", backends, port=80, target_port=9090)
        assert svc.cluster_ip.startswith("10.96.")
        lines = client_pod.run([*DIAL, svc.cluster_ip, "40"]).stdout.split("\n")
        answers = [line.split() for line in lines if line]
        assert len(answers) == 40
        # Backends see the client's pod IP (DNAT only, no SNAT) ...
        assert {peer for _, peer in answers} == {client_pod.ip}
        # ... and the random-probability rules spread load over both backends.
        assert {name for name, _ in answers} == {"payments-0", "payments-1"}
        slices = client.DiscoveryV1Api(control_plane.api_client()).list_namespaced_endpoint_slice(
            "shop", label_selector="kubernetes.io/service-name=payments").items
        assert sorted(e.addresses[0] for e in slices[0].endpoints) == sorted(b.ip for b in backends)
        conntrack = subprocess.run(["conntrack", "-L", "-d", svc.cluster_ip],
                                   capture_output=True, text=True).stdout
        assert any(b.ip in conntrack for b in backends), "conntrack shows no DNAT entry"
    finally:
        for s in servers:
            s.kill()
            s.wait()
