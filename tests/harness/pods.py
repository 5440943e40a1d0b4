"""Network-namespace pods: a netns (veth into a bridge, own IPv4/IPv6) plus a
cgroup v2 directory, registered in the API server as a Pod.

Addresses are /32 and /128 routed via the bridge's gateway, so pod-to-pod
traffic passes the root namespace's netfilter like on a real node: that is
what lets kube-proxy-style DNAT (harness.services) and conntrack work.
All names start with a fixed prefix so a killed run's leftovers can be found.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.workloads import Objects

BRIDGE = "tpbr0"
NETNS_PREFIX = "tp-"
VETH_PREFIX = "tph"
GATEWAY4, POD_CIDR4 = "10.244.0.1", "10.244.0.0/16"
GATEWAY6, POD_CIDR6 = "fd00:10:244::1", "fd00:10:244::/64"
CGROUP_TREE = "traceprobe-test"


_ADDRESS_SEQUENCE = itertools.count(secrets.randbelow(200) * 250)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def cgroup2_root() -> Path:
    """Mount point of the cgroup v2 hierarchy (unified or hybrid layout)."""
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if parts[2] == "cgroup2":
            return Path(parts[1])
    raise RuntimeError("no cgroup2 hierarchy mounted (mount -t cgroup2 none /sys/fs/cgroup)")


def _write(path: str, value: str) -> None:
    Path(path).write_text(value)


def ensure_bridge() -> None:
    """The node's pod bridge and forwarding (idempotent)."""
    if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "replace", f"{GATEWAY4}/16", "dev", BRIDGE)
    sh("ip", "-6", "addr", "replace", f"{GATEWAY6}/64", "dev", BRIDGE, "nodad")
    sh("ip", "link", "set", BRIDGE, "up")
    _write("/proc/sys/net/ipv4/ip_forward", "1")
    _write("/proc/sys/net/ipv6/conf/all/forwarding", "1")


def kill_cgroup(path: Path) -> None:
    """SIGKILL every process in a cgroup subtree, then remove it bottom-up."""
    if not path.exists():
        return
    for sub in [*sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True), path]:
        if not sub.is_dir():
            continue
        procs = sub / "cgroup.procs"
        for _ in range(50):
            pids = procs.read_text().split() if procs.exists() else []
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["sleep", "0.05"])
        with contextlib.suppress(OSError):
            sub.rmdir()


def cleanup_stale() -> list[str]:
    """Remove netns, links and cgroups a killed run left behind; return what went."""
    removed: list[str] = []
    for line in sh("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(NETNS_PREFIX):
            sh("ip", "netns", "del", name, check=False)
            removed.append(f"netns {name}")
    for line in sh("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(VETH_PREFIX):
            sh("ip", "link", "del", name, check=False)
            removed.append(f"link {name}")
    tree = cgroup2_root() / CGROUP_TREE
    if tree.exists():
        kill_cgroup(tree)
        removed.append(f"cgroup {tree}")
    return removed


def _wait_reachable(ip: str, seconds: float = 10.0) -> None:
    """Until the host reaches `ip` (a reused address: its new owner's link and ARP)."""
    deadline = time.monotonic() + seconds
    while sh("ping", "-c1", "-W1", ip, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{ip} not reachable from the host {seconds:g}s after plumbing")


@dataclass
class Pod:
    name: str
    namespace: str
    node: str
    ip: str
    ip6: str | None
    netns: str | None  # None for hostNetwork pods
    cgroup: Path
    labels: dict[str, str] = field(default_factory=dict)
    uid: str = ""

    @property
    def cgroup_id(self) -> int:
        """What bpf_get_current_cgroup_id() returns for this pod's processes."""
        return os.stat(self.cgroup).st_ino

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def _enter_cgroup(self) -> None:
        # Runs in the child before exec: the process and all it spawns belong to the pod.
        (self.cgroup / "cgroup.procs").write_text("0")

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self._argv(argv), preexec_fn=self._enter_cgroup, **kwargs)

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 60,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self._argv(argv), preexec_fn=self._enter_cgroup,
                                capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise RuntimeError(f"in pod {self.namespace}/{self.name}: {' '.join(argv)} "
                               f"exited {result.returncode}: {result.stderr.strip()}")
        return result


class PodFactory:
    """Creates pods on one simulated node; cleanup() removes everything it made."""

    def __init__(self, api_client: Any, node: str = "node-1") -> None:
        self.objects = Objects(api_client)
        self.node = node
        self.node_ip = GATEWAY4
        self.pods: list[Pod] = []
        self._next = 0
        self._run_id = secrets.token_hex(2)
        ensure_bridge()
        self.objects.ensure_node(node, self.node_ip)
        self.cgroup_base = cgroup2_root() / CGROUP_TREE / node
        self.cgroup_base.mkdir(parents=True, exist_ok=True)

    def _addresses(self) -> tuple[str, str]:
        # One sequence per process (from a random start), shared by all factories
        # (nodes), so two nodes of one run never hand out the same address.
        n = next(_ADDRESS_SEQUENCE) % 50_000
        hi, lo = 1 + n // 250, 2 + n % 250
        return f"10.244.{hi}.{lo}", f"fd00:10:244::{hi:x}:{lo:x}"

    def create(self, name: str, namespace: str = "default", labels: dict[str, str] | None = None,
               owner: tuple[str, str] | None = None, host_network: bool = False,
               reuse_ip_of: Pod | None = None) -> Pod:
        """A running pod; `owner` is (kind, workload name), e.g. ("Deployment", "cart").
        `reuse_ip_of` hands it a deleted pod's addresses (IP reuse, as after churn)."""
        labels = dict(labels or {"app": owner[1] if owner else name})
        self.objects.ensure_namespace(namespace)
        refs: list[dict[str, Any]] = []
        if owner:
            refs, extra = self.objects.owner_refs(owner[0], owner[1], namespace, labels)
            labels.update(extra)
        tag = f"{self._run_id}{self._next:02x}"
        self._next += 1
        ip4, ip6 = (self.node_ip, None) if host_network else (
            (reuse_ip_of.ip, reuse_ip_of.ip6) if reuse_ip_of else self._addresses())
        obj = self.objects.create_pod(name, namespace, self.node, labels, refs, host_network)
        # Laid out like the kubelet's cgroupfs driver (kubepods/pod<uid>/<container>),
        # so the agent finds pods from cgroup paths here as on a real node.
        cgroup = self.cgroup_base / "kubepods" / f"pod{obj.metadata.uid}" / "main"
        cgroup.mkdir(parents=True, exist_ok=True)
        netns = None
        if not host_network:
            netns = f"{NETNS_PREFIX}{tag}"
            self._plumb(netns, f"{VETH_PREFIX}{tag}", ip4, str(ip6))
            if reuse_ip_of is not None:  # the old pod's MAC must not linger in the host
                for ip in (ip4, ip6):
                    sh("ip", "neigh", "flush", "to", str(ip), check=False)
                _wait_reachable(ip4)
        pod = Pod(name, namespace, self.node, ip4, ip6, netns, cgroup, labels, obj.metadata.uid)
        self.pods.append(pod)
        self.objects.mark_running(name, namespace, [ip4] + ([ip6] if ip6 else []), self.node_ip)
        return pod

    def create_external(self, name: str) -> Pod:
        """A peer outside the cluster: a network namespace on the bridge with no Pod
        object, its processes in a cgroup outside every simulated node."""
        tag = f"{self._run_id}{self._next:02x}"
        self._next += 1
        ip4, ip6 = self._addresses()
        netns = f"{NETNS_PREFIX}{tag}"
        self._plumb(netns, f"{VETH_PREFIX}{tag}", ip4, ip6)
        cgroup = cgroup2_root() / CGROUP_TREE / "outside" / name
        cgroup.mkdir(parents=True, exist_ok=True)
        pod = Pod(name, "", "", ip4, ip6, netns, cgroup)
        self.pods.append(pod)
        return pod

    @staticmethod
    def _plumb(netns: str, veth: str, ip4: str, ip6: str) -> None:
        peer = f"{veth}p"
        sh("ip", "netns", "add", netns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", netns)
        sh("ip", "link", "set", veth, "master", BRIDGE, "up")
        inside = ("ip", "netns", "exec", netns)
        sh(*inside, "ip", "link", "set", peer, "name", "eth0")
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "addr", "add", f"{ip4}/32", "dev", "eth0")
        sh(*inside, "ip", "-6", "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad")
        sh(*inside, "ip", "link", "set", "eth0", "up")
        sh(*inside, "ip", "route", "add", GATEWAY4, "dev", "eth0", "scope", "link")
        sh(*inside, "ip", "route", "add", "default", "via", GATEWAY4, "dev", "eth0")
        sh(*inside, "ip", "-6", "route", "add", GATEWAY6, "dev", "eth0")
        sh(*inside, "ip", "-6", "route", "add", "default", "via", GATEWAY6, "dev", "eth0")
        # Same-subnet peers are reached via the gateway; a redirect must not bypass it.
        sh(*inside, "sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0",
           "net.ipv6.conf.all.accept_redirects=0")

    def delete(self, pod: Pod, delete_object: bool = True) -> None:
        """Remove one pod's processes, cgroups and netns (and its Pod object)."""
        kill_cgroup(pod.cgroup.parent if pod.namespace else pod.cgroup)
        if pod.netns:
            # The host end first, synchronously: a netns is torn down asynchronously, and
            # until it is, its eth0 would still answer ARP for an address a new pod reuses.
            sh("ip", "link", "del", VETH_PREFIX + pod.netns.removeprefix(NETNS_PREFIX),
               check=False)
            sh("ip", "netns", "del", pod.netns, check=False)
        if delete_object and pod.namespace:
            with contextlib.suppress(Exception):
                self.objects.core.delete_namespaced_pod(pod.name, pod.namespace,
                                                        grace_period_seconds=0)
        if pod in self.pods:
            self.pods.remove(pod)

    def cleanup(self) -> None:
        for pod in list(self.pods):
            self.delete(pod, delete_object=False)
        self.objects.delete_all()
        kill_cgroup(self.cgroup_base)
