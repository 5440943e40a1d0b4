"""A real Kubernetes node on this machine: kubelet + containerd + runc + CNI.

`RealNode(NodeControlPlane(...), workdir).start()` brings up, all under
`workdir` and torn down by stop():

- the node IP: a veth pair, one end holding NODE_IP/32 (the kubelet refuses a
  loopback node IP and this VM has no `dummy` module);
- the control plane (NodeControlPlane: ControlPlane + Node,RBAC authorization,
  the ServiceAccount and NodeRestriction admission plugins, serving on NODE_IP so
  that pods reach it through the `kubernetes` Service), unless already started;
- kube-controller-manager (ServiceAccount and token controllers, Deployment,
  ReplicaSet, DaemonSet, Job, EndpointSlice, ...) and kube-scheduler;
- containerd (Debian's 1.6) with its own config, root, state and socket; CNI
  bridge + host-local + portmap (loopback is called by containerd itself);
- the kubelet (client certificate O=system:nodes, CN=system:node:<name>, signed
  by the harness CA; cgroupfs driver on this hybrid cgroup layout);
- kube-proxy in iptables mode and CoreDNS as a Deployment behind the kube-dns
  Service at DNS_SERVICE_IP, the kubelet's clusterDNS.

Address ranges (none overlaps the simulated tier's 10.244.0.0/16 pods and
10.96.0.0/16 Services, so both tiers can share a machine): pods POD_CIDR, Services
SERVICE_CIDR, node NODE_IP. Images come from scripts/node/build-images.sh and are
imported into this node's containerd at start; pods use them with
imagePullPolicy Never/IfNotPresent (no registry is reachable).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane import ControlPlane
from harness.node_config import (
    CLUSTER_DOMAIN,
    POD_CIDR,
    SERVICE_CIDR,
    cni_conflist,
    containerd_config,
    coredns_manifests,
    kube_proxy_config,
    kubelet_config,
)
from harness.node_host import (
    _IPT_TABLES,
    CNI_BRIDGE,
    NODE_LINK,
    NODE_PEER,
    STATE_FILE,
    _cgroup_mounts,
    _chains,
    _kill_and_remove_cgroup,
    _link_exists,
    _read_sysctl,
    host_prerequisites,
    node_images,
    remove_chains,
    restore_sysctls,
    sh,
    unmount_all,
)
from harness.pki import cert_kubeconfig, sign_cert
from harness.procs import ManagedProcess, free_port
from harness.tools import ToolMissing, tool_path
from harness.waiting import Fatal, fail, wait_until

NODE_NAME = "traceprobe-node"
NODE_IP = "10.236.0.1"
KUBERNETES_SERVICE_IP = "10.235.0.1"

_NODE_TOOLS = ("kubelet", "kube-scheduler", "kube-controller-manager", "kube-proxy", "coredns")
# Sysctls the kubelet sets at start (its "kernel tunables") and the ones CNI/
# kube-proxy may set; stop() puts back what it found.
_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
            "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
            "net/ipv4/conf/all/route_localnet", "net/ipv4/ip_forward")
# Fixed host paths the components write whatever their config says: libcni's
# result cache (containerd 1.6 has no setting for it), the kubelet's device-plugin
# socket, the shims' sockets (/run/containerd/s). Removed by stop() if new.
_HOST_DIRS = (Path("/var/lib/cni"), Path("/var/lib/kubelet"), Path("/run/containerd"))
# What start() found (sysctls, host dirs), for stop() and for cleanup_stale()
# after a killed run.



# --- the control plane, as a real node needs it ---------------------------------
class NodeControlPlane(ControlPlane):
    """ControlPlane as a real node needs it: serving on NODE_IP (pods reach it
    through the `kubernetes` Service), Node,RBAC, ServiceAccount admission, its
    own Service CIDR."""

    def __init__(self, workdir: Path, node_ip: str = NODE_IP,
                 service_cidr: str = SERVICE_CIDR) -> None:
        super().__init__(workdir, address=node_ip, service_cidr=service_cidr, real_node=True,
                         extra_sans=(f"IP:{node_ip}", f"IP:{KUBERNETES_SERVICE_IP}",
                                     "DNS:kubernetes", "DNS:kubernetes.default",
                                     f"DNS:kubernetes.default.svc.{CLUSTER_DOMAIN}"))
        self.node_ip = node_ip


# --- the node -------------------------------------------------------------------
class RealNode:
    """One real Kubernetes node (see the module docstring); stop() undoes start()."""

    def __init__(self, control_plane: NodeControlPlane, workdir: Path,
                 name: str = NODE_NAME) -> None:
        self.cp = control_plane
        self.workdir = workdir
        self.name = name
        self.node_ip = control_plane.node_ip
        self.processes: dict[str, ManagedProcess] = {}
        self.images: dict[str, tuple[str, Path]] = {}
        self.timings: dict[str, float] = {}
        self.containerd_sock = workdir / "containerd" / "containerd.sock"
        self._started_cp = False
        self._sysctls: dict[str, str | None] = {}
        self._chains: dict[str, dict[str, set[str]]] = {}
        self._made_link = False
        self._new_host_dirs: list[Path] = []
        self._ports: dict[str, int] = {}

    # --- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> None:
        t0 = time.monotonic()
        lacking = host_prerequisites()
        if lacking:
            raise ToolMissing("a real node needs: " + ", ".join(lacking))
        binaries = {t: tool_path(t) for t in _NODE_TOOLS}
        self.images = node_images()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._sysctls = {s: _read_sysctl(s) for s in _SYSCTLS}
        self._chains = {cmd: {t: _chains(cmd, t) for t in _IPT_TABLES}
                        for cmd in ("iptables", "ip6tables")}
        self._new_host_dirs = [d for d in _HOST_DIRS if not d.exists()]
        STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(json.dumps({"sysctls": self._sysctls,
                                          "new_host_dirs": [str(d) for d in self._new_host_dirs]}))
        self._node_ip_up()
        if not self.cp.processes:
            self._started_cp = True
            self.cp.start()
        self._mark(t0, "control_plane")
        self._credentials()
        self._start_containerd()
        self._mark(t0, "containerd")
        self._import_images()
        self._mark(t0, "images_imported")
        self._write_cni_config()
        self._start_controllers(binaries)
        self._start_kubelet(binaries["kubelet"])
        self._wait_node_ready(timeout)
        self._mark(t0, "node_ready")
        self._start_kube_proxy(binaries["kube-proxy"])
        self._deploy_coredns()
        self._wait_default_service_account()
        self._wait_coredns(timeout)
        self._mark(t0, "coredns_ready")

    def stop(self) -> None:
        errors: list[str] = []

        def step(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as exc:  # keep tearing down
                errors.append(f"{what}: {exc}")

        for name in ("kube-controller-manager", "kube-scheduler"):
            step(f"stop {name}", functools.partial(self._stop_process, name))
        if "kubelet" in self.processes and self.processes["kubelet"].alive():
            step("delete pods", self._delete_all_pods)
        step("stop kubelet", lambda: self._stop_process("kubelet"))
        step("stop kube-proxy", lambda: self._stop_process("kube-proxy"))
        if (self.workdir / "kube-proxy.yaml").exists():
            step("kube-proxy --cleanup", self._kube_proxy_cleanup)
        step("kill containers", self._kill_containers)
        step("stop containerd", lambda: self._stop_process("containerd"))
        step("kill shims", self._kill_shims)
        step("remove cgroups", self._remove_cgroups)
        step("unmount", lambda: unmount_all(self.workdir))
        step("remove CNI bridge", lambda: sh("ip", "link", "del", CNI_BRIDGE)
             if _link_exists(CNI_BRIDGE) else None)
        step("remove iptables chains", self._remove_chains)
        if self._started_cp:
            step("stop control plane", self.cp.stop)
        step("remove node IP", self._node_ip_down)
        step("restore sysctls", self._restore_sysctls)
        step("host dirs", self._remove_host_dirs)
        if not errors:
            STATE_FILE.unlink(missing_ok=True)
        if errors:
            raise RuntimeError("real node teardown: " + "; ".join(errors))

    # --- clients and helpers for tests -----------------------------------------
    def api_client(self) -> Any:
        return self.cp.api_client()

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl(*args, **kwargs)

    def ctr(self, *args: str, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        return sh("ctr", "--address", self.containerd_sock, "--namespace", "k8s.io", *args,
                  check=check, timeout=timeout)

    def tasks(self) -> dict[str, tuple[int, str]]:
        """containerd task id -> (host pid, status), for every container and sandbox."""
        out = self.ctr("tasks", "ls").stdout.splitlines()[1:]
        tasks = {}
        for line in out:
            parts = line.split()
            if len(parts) >= 3:
                tasks[parts[0]] = (int(parts[1]), parts[2])
        return tasks

    def container_pid(self, container_id: str) -> int:
        """Host pid of a container's init process (id without the containerd:// prefix)."""
        cid = container_id.removeprefix("containerd://")
        pid, status = self.tasks()[cid]
        if status != "RUNNING":
            raise RuntimeError(f"container {cid} is {status}")
        return pid

    def image(self, key: str) -> str:
        """The reference of an imported image: base, pause, coredns, workload."""
        return self.images[key][0]

    def logs(self) -> dict[str, Path]:
        return {name: p.log for name, p in self.processes.items()}

    def diagnose(self) -> str:
        return "\n".join(f"--- {name} ---\n{p.log_tail(15)}" for name, p in
                         self.processes.items())

    # --- steps -----------------------------------------------------------------
    def _mark(self, t0: float, what: str) -> None:
        self.timings[what] = round(time.monotonic() - t0, 2)

    def _node_ip_up(self) -> None:
        if _link_exists(NODE_LINK):  # a killed run's: ours by name
            sh("ip", "link", "del", NODE_LINK)
        sh("ip", "link", "add", NODE_LINK, "type", "veth", "peer", "name", NODE_PEER)
        self._made_link = True
        sh("ip", "addr", "add", f"{self.node_ip}/32", "dev", NODE_LINK)
        sh("ip", "link", "set", NODE_PEER, "up")
        sh("ip", "link", "set", NODE_LINK, "up")

    def _node_ip_down(self) -> None:
        if self._made_link and _link_exists(NODE_LINK):
            sh("ip", "link", "del", NODE_LINK)

    def _credentials(self) -> None:
        pki = self.cp.pki
        ca = pki / "ca.crt"
        server = self.cp.server
        users = {
            "kubelet": (f"system:node:{self.name}", ("system:nodes",)),
            "kube-proxy": ("system:kube-proxy", ()),
            "kube-scheduler": ("system:kube-scheduler", ()),
            "kube-controller-manager": ("system:kube-controller-manager", ()),
        }
        for name, (cn, orgs) in users.items():
            cert, key = sign_cert(pki, ca, f"{name}-client", cn, orgs=orgs)
            (self.workdir / f"{name}.kubeconfig").write_text(
                yaml.safe_dump(cert_kubeconfig(server, ca, cert, key, cn)))
        sign_cert(pki, ca, "kubelet-serving", f"system:node:{self.name}",
                  orgs=("system:nodes",), sans=(f"IP:{self.node_ip}", f"DNS:{self.name}"),
                  server=True)

    def _start_containerd(self) -> None:
        base = self.workdir / "containerd"
        for sub in ("root", "state", "opt"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        config = containerd_config(base, self.containerd_sock, self.images["pause"][0],
                                   self.workdir / "cni" / "net.d")
        (base / "config.toml").write_text(config)
        proc = ManagedProcess("containerd", ["containerd", "--config", base / "config.toml"],
                              self.workdir / "containerd.log")
        self.processes["containerd"] = proc
        wait_until(lambda: (
            proc.alive() or fail(f"containerd exited:\n{proc.log_tail()}"))
            and self.containerd_sock.exists()
            and self.ctr("version", check=False, timeout=10).returncode == 0,
            30, "containerd answers on its socket")

    def _import_images(self) -> None:
        for _key, (ref, archive) in self.images.items():
            self.ctr("images", "import", str(archive), timeout=300)
            listed = self.ctr("images", "ls", "-q").stdout.split()
            if ref not in listed:
                raise RuntimeError(f"ctr import of {archive} did not name {ref}: {listed}")

    def _write_cni_config(self) -> None:
        netd = self.workdir / "cni" / "net.d"
        netd.mkdir(parents=True, exist_ok=True)
        conflist = cni_conflist(self.workdir / "cni" / "ipam", self.node_ip)
        (netd / "10-traceprobe.conflist").write_text(json.dumps(conflist, indent=1))

    def _start_controllers(self, binaries: dict[str, Path]) -> None:
        pki = self.cp.pki
        kcm_cfg = self.workdir / "kube-controller-manager.kubeconfig"
        self._ports["kcm"] = free_port()
        self.processes["kube-controller-manager"] = ManagedProcess("kube-controller-manager", [
            binaries["kube-controller-manager"],
            f"--kubeconfig={kcm_cfg}", f"--authentication-kubeconfig={kcm_cfg}",
            f"--authorization-kubeconfig={kcm_cfg}",
            "--bind-address=127.0.0.1", f"--secure-port={self._ports['kcm']}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={self.cp.service_cidr}",
            f"--cluster-cidr={POD_CIDR}", "--allocate-node-cidrs=true",
            "--node-cidr-mask-size=24",
            "--controllers=*",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
        ], self.workdir / "kube-controller-manager.log")
        sched_cfg = self.workdir / "kube-scheduler.kubeconfig"
        self._ports["scheduler"] = free_port()
        self.processes["kube-scheduler"] = ManagedProcess("kube-scheduler", [
            binaries["kube-scheduler"],
            f"--kubeconfig={sched_cfg}", f"--authentication-kubeconfig={sched_cfg}",
            f"--authorization-kubeconfig={sched_cfg}",
            "--bind-address=127.0.0.1", f"--secure-port={self._ports['scheduler']}",
            "--leader-elect=false", f"--cert-dir={self.workdir / 'scheduler-certs'}",
        ], self.workdir / "kube-scheduler.log")

    def _start_kubelet(self, kubelet: Path) -> None:
        pki = self.cp.pki
        self._ports["kubelet"], self._ports["kubelet-healthz"] = free_port(), free_port()
        config = kubelet_config(self.node_ip, self._ports["kubelet"],
                                self._ports["kubelet-healthz"], pki, self.containerd_sock,
                                self.workdir / "pod-logs")
        cfg = self.workdir / "kubelet.yaml"
        cfg.write_text(yaml.safe_dump(config))
        self.processes["kubelet"] = ManagedProcess("kubelet", [
            kubelet, f"--config={cfg}",
            f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
            f"--root-dir={self.workdir / 'kubelet'}",
            f"--cert-dir={self.workdir / 'kubelet-certs'}",
            f"--hostname-override={self.name}", f"--node-ip={self.node_ip}",
        ], self.workdir / "kubelet.log")

    def _wait_node_ready(self, timeout: float) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())

        def ready() -> bool:
            for name in ("kubelet", "containerd", "kube-controller-manager", "kube-scheduler"):
                proc = self.processes[name]
                if not proc.alive():
                    raise Fatal(f"{name} exited:\n{proc.log_tail(40)}")
            node = core.read_node(self.name)
            return any(c.type == "Ready" and c.status == "True"
                       for c in node.status.conditions or [])

        wait_until(ready, timeout, f"node {self.name} Ready", diagnose=self.diagnose)

    def _start_kube_proxy(self, kube_proxy: Path) -> None:
        self._ports["proxy-healthz"], self._ports["proxy-metrics"] = free_port(), free_port()
        config = kube_proxy_config(self.name, self.node_ip,
                                   self.workdir / "kube-proxy.kubeconfig",
                                   self._ports["proxy-healthz"], self._ports["proxy-metrics"])
        cfg = self.workdir / "kube-proxy.yaml"
        cfg.write_text(yaml.safe_dump(config))
        proc = ManagedProcess("kube-proxy", [kube_proxy, f"--config={cfg}"],
                              self.workdir / "kube-proxy.log")
        self.processes["kube-proxy"] = proc
        url = f"http://127.0.0.1:{self._ports['proxy-healthz']}/healthz"

        def healthy() -> bool:
            if not proc.alive():
                raise Fatal(f"kube-proxy exited:\n{proc.log_tail(40)}")
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)

        wait_until(healthy, 60, "kube-proxy /healthz", diagnose=lambda: proc.log_tail(30))

    def _kube_proxy_cleanup(self) -> None:
        sh(tool_path("kube-proxy"), f"--config={self.workdir / 'kube-proxy.yaml'}",
           "--cleanup", check=False, timeout=60)

    def _deploy_coredns(self) -> None:
        docs = "\n---\n".join(yaml.safe_dump(m) for m in coredns_manifests(self.image("coredns")))
        self.kubectl("apply", "-f", "-", input_text=docs)

    def _wait_default_service_account(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())
        wait_until(lambda: core.read_namespaced_service_account("default", "default"), 60,
                   "ServiceAccount default/default (controller-manager)",
                   diagnose=lambda: self.processes["kube-controller-manager"].log_tail(20))

    def _wait_coredns(self, timeout: float) -> None:
        from kubernetes import client

        apps = client.AppsV1Api(self.api_client())

        def ready() -> bool:
            dep = apps.read_namespaced_deployment("coredns", "kube-system")
            return (dep.status.ready_replicas or 0) >= 1

        wait_until(ready, timeout, "CoreDNS Deployment ready", diagnose=self.diagnose_pods)

    def diagnose_pods(self) -> str:
        pods = self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        events = self.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp",
                              check=False).stdout
        return f"{pods}\n{events[-3000:]}\n{self.diagnose()}"

    # --- teardown steps --------------------------------------------------------
    def _stop_process(self, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc is not None:
            proc.stop(timeout=20)

    def _delete_all_pods(self) -> None:
        """Force-delete every pod; the kubelet kills their containers and sandboxes
        (CNI DEL) — the clean way, while kubelet and containerd still run."""
        self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=0",
                     "--force", "--wait=false", check=False)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not any(
                status == "RUNNING" for _pid, status in self.tasks().values()),
                60, "containers gone")

    def _kill_containers(self) -> None:
        if "containerd" not in self.processes or not self.containerd_sock.exists():
            return
        for task in list(self.tasks()):
            self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: all(
                status != "RUNNING" for _p, status in self.tasks().values()), 20, "tasks stopped")
        for task in list(self.tasks()):
            self.ctr("tasks", "delete", "--force", task, check=False)
        for cid in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", cid, check=False)

    def _kill_shims(self) -> None:
        state = self.workdir / "containerd" / "state" / "io.containerd.runtime.v2.task"
        for pidfile in state.glob("*/*/shim.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(pidfile.read_text().strip())
                if "containerd-shim" in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(pid, signal.SIGKILL)

    def _remove_cgroups(self) -> None:
        for root in _cgroup_mounts():
            _kill_and_remove_cgroup(root / "kubepods")

    def _remove_chains(self) -> None:
        for cmd, keep in self._chains.items():
            remove_chains(cmd, keep)

    def _restore_sysctls(self) -> None:
        restore_sysctls(self._sysctls)

    def _remove_host_dirs(self) -> None:
        for path in self._new_host_dirs:
            if path.exists():
                unmount_all(path)
                shutil.rmtree(path)
