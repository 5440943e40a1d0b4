"""ClusterIP Services the way kube-proxy (iptables mode) does them: DNAT in the
root namespace with random-probability rules per backend, plus the Service and
EndpointSlice objects a real cluster would have.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from harness.pods import Pod, sh

CHAIN = "TP-SERVICES"


def _ipt(*args: str, check: bool = True) -> None:
    sh("iptables", "-w", "-t", "nat", *args, check=check)


def ensure_chain() -> None:
    if sh("iptables", "-w", "-t", "nat", "-L", CHAIN, "-n", check=False).returncode != 0:
        _ipt("-N", CHAIN)
    for hook in ("PREROUTING", "OUTPUT"):
        if sh("iptables", "-w", "-t", "nat", "-C", hook, "-j", CHAIN, check=False).returncode:
            _ipt("-I", hook, "1", "-j", CHAIN)


def cleanup_stale() -> None:
    """Drop every chain this harness made (a killed run may have left some)."""
    listing = sh("iptables", "-w", "-t", "nat", "-S", check=False).stdout
    for hook in ("PREROUTING", "OUTPUT"):
        for _ in range(listing.count(f"-A {hook} -j {CHAIN}\n")):
            _ipt("-D", hook, "-j", CHAIN, check=False)
    chains = [line.split()[1] for line in listing.splitlines()
              if line.startswith("-N TP-")]
    for chain in chains:
        _ipt("-F", chain, check=False)
    for chain in chains:
        _ipt("-X", chain, check=False)


@dataclass
class Service:
    name: str
    namespace: str
    cluster_ip: str
    port: int
    target_port: int
    protocol: str
    backends: list[Pod]
    chain: str


class ServiceFactory:
    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.services: list[Service] = []
        ensure_chain()

    def create(self, name: str, namespace: str, backends: list[Pod], port: int,
               target_port: int | None = None, protocol: str = "TCP") -> Service:
        target = target_port or port
        selector = {"app": backends[0].labels.get("app", name)} if backends else {}
        svc = self.core.create_namespaced_service(namespace, {
            "metadata": {"name": name},
            "spec": {"type": "ClusterIP", "selector": selector, "ports": [{
                "name": "main", "port": port, "targetPort": target, "protocol": protocol}]}})
        cluster_ip = svc.spec.cluster_ip  # allocated by the API server itself
        self.discovery.create_namespaced_endpoint_slice(namespace, {
            "metadata": {"name": f"{name}-sim", "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "traceprobe-test-harness"}},
            "addressType": "IPv4",
            "ports": [{"name": "main", "port": target, "protocol": protocol}],
            "endpoints": [{"addresses": [p.ip], "conditions": {"ready": True},
                           "nodeName": p.node, "targetRef": {
                               "kind": "Pod", "name": p.name, "namespace": p.namespace,
                               "uid": p.uid}} for p in backends]})
        chain = "TP-SVC-" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:12].upper()
        _ipt("-N", chain)
        proto = protocol.lower()
        # kube-proxy's trick: rule i matches with probability 1/(n-i), so the
        # choice is uniform over the n backends.
        for i, pod in enumerate(backends):
            left = len(backends) - i
            match = ["-m", "statistic", "--mode", "random", "--probability",
                     f"{1 / left:.5f}"] if left > 1 else []
            _ipt("-A", chain, "-p", proto, *match, "-j", "DNAT",
                 "--to-destination", f"{pod.ip}:{target}")
        _ipt("-A", CHAIN, "-d", f"{cluster_ip}/32", "-p", proto, "--dport", str(port),
             "-j", chain)
        service = Service(name, namespace, cluster_ip, port, target, protocol, backends, chain)
        self.services.append(service)
        return service

    def delete(self, service: Service) -> None:
        _ipt("-D", CHAIN, "-d", f"{service.cluster_ip}/32", "-p", service.protocol.lower(),
             "--dport", str(service.port), "-j", service.chain, check=False)
        _ipt("-F", service.chain, check=False)
        _ipt("-X", service.chain, check=False)
        for call, name in ((self.discovery.delete_namespaced_endpoint_slice, f"{service.name}-sim"),
                           (self.core.delete_namespaced_service, service.name)):
            with contextlib.suppress(ApiException):
                call(name, service.namespace)
        self.services.remove(service)

    def cleanup(self) -> None:
        for service in list(self.services):
            self.delete(service)
