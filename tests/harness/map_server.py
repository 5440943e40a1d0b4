"""The map view's HTTP server in the test world, reachable through the API server's
service proxy the way users reach it.

The API server refuses to proxy to loopback and link-local addresses, so the
server listens on the pod bridge's gateway address (harness.pods), registered
as the address of a Pod (the proxy only follows endpoints that name a Pod
with that IP), and a selector-less Service `traceprobe-service-map` (port name
`http`) with hand-written Endpoints and an EndpointSlice points there.
"""

from __future__ import annotations

import contextlib
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from harness import pods
from harness.workloads import Objects
from traceprobe_map.http_api import MapSource, serve

NAMESPACE = "traceprobe-system"
SERVICE = "traceprobe-service-map"
POD = "traceprobe-service-map-test"


@contextlib.contextmanager
def local_server(source: MapSource, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `source` on a free port; yields the base URL (with a trailing slash)."""
    server = serve(source, host, 0)
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET",
        context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@dataclass
class ProxiedMap:
    """A map server published as the Service the CLI and users look for."""

    server: ThreadingHTTPServer
    address: str
    port: int
    control_plane: Any
    namespace: str = NAMESPACE
    service: str = SERVICE

    @property
    def proxy_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/services/{self.service}:http/proxy/"

    @property
    def proxy_url(self) -> str:
        return f"{self.control_plane.server}{self.proxy_path}"

    def admin_get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """GET through the service proxy as the admin (TLS verified against the test CA)."""
        context = ssl.create_default_context(cafile=str(self.control_plane.pki / "ca.crt"))
        return get(self.proxy_url + path, context=context,
                   headers={"Authorization": f"Bearer {self.control_plane.admin_token}"})


@contextlib.contextmanager
def proxied_map(control_plane: Any, source: MapSource) -> Iterator[ProxiedMap]:
    """Serve `source` on the bridge gateway and publish it as a Service (needs root)."""
    from kubernetes import client

    pods.ensure_bridge()
    server = serve(source, pods.GATEWAY4, 0)
    port = server.server_address[1]
    api = control_plane.api_client()
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    objects = Objects(api)
    objects.ensure_namespace(NAMESPACE)
    labels = {"app.kubernetes.io/name": "traceprobe", "app.kubernetes.io/component": "service-map"}
    pod = objects.create_pod(POD, NAMESPACE, "map-node", labels, [], host_network=False)
    objects.mark_running(POD, NAMESPACE, [pods.GATEWAY4], pods.GATEWAY4)
    target = {"kind": "Pod", "namespace": NAMESPACE, "name": POD, "uid": pod.metadata.uid}
    core.create_namespaced_service(NAMESPACE, {
        "metadata": {"name": SERVICE, "labels": labels},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}})
    # Both: the proxy reads Endpoints; EndpointSlices are what a current cluster has.
    core.create_namespaced_endpoints(NAMESPACE, {
        "metadata": {"name": SERVICE, "labels": labels},
        "subsets": [{"addresses": [{"ip": pods.GATEWAY4, "targetRef": target}],
                     "ports": [{"name": "http", "port": port}]}]})
    discovery.create_namespaced_endpoint_slice(NAMESPACE, {
        "metadata": {"name": f"{SERVICE}-test",
                     "labels": {**labels, "kubernetes.io/service-name": SERVICE}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [pods.GATEWAY4], "conditions": {"ready": True},
                       "targetRef": target}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}]})
    try:
        yield ProxiedMap(server, pods.GATEWAY4, port, control_plane)
    finally:
        server.shutdown()
        server.server_close()
        for delete, name in ((discovery.delete_namespaced_endpoint_slice, f"{SERVICE}-test"),
                             (core.delete_namespaced_endpoints, SERVICE),
                             (core.delete_namespaced_service, SERVICE)):
            with contextlib.suppress(Exception):
                delete(name, NAMESPACE)
        objects.delete_all()
