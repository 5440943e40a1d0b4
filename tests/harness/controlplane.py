"""A real etcd + kube-apiserver on loopback, RBAC on (the envtest approach).

The admin authenticates with a static token in ``system:masters``; any
ServiceAccount can be acted as with a real token from the TokenRequest API, so
RBAC is checked by Kubernetes itself, not by us.
"""

from __future__ import annotations

import secrets
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from harness.procs import ManagedProcess, free_port, wait_for_port
from harness.tools import tool_path

SERVICE_CIDR = "10.96.0.0/16"
ADMIN_USER = "traceprobe-admin"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path, extra_sans: tuple[str, ...] = ()) -> None:
    """CA, an API server serving cert for 127.0.0.1 (and `extra_sans`, e.g.
    "IP:10.236.0.1"), and the ServiceAccount key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=traceprobe-test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    sans = ",".join(("IP:127.0.0.1", "DNS:localhost", "DNS:kubernetes.default.svc", *extra_sans))
    (pki / "san.ext").write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", "apiserver.key", "-out", "apiserver.csr", cwd=pki)
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "apiserver.crt",
             cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig(server: str, ca: Path, token: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {
            "server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
    }


class ControlPlane:
    """etcd + kube-apiserver in `workdir`; start() blocks until /readyz is ok.

    The defaults serve the simulated tiers (loopback, RBAC, no controller-manager so
    no ServiceAccount admission). A real node (harness.node) asks for `address` = its
    node IP (pods reach the API server through the `kubernetes` Service),
    `real_node=True` (Node,RBAC authorization, NodeRestriction, ServiceAccount
    admission, a client certificate for calls to the kubelet), its `service_cidr`
    and `extra_sans`."""

    def __init__(self, workdir: Path, *, address: str = "127.0.0.1",
                 service_cidr: str = SERVICE_CIDR, extra_sans: tuple[str, ...] = (),
                 real_node: bool = False) -> None:
        self.workdir = workdir
        self.address = address
        self.service_cidr = service_cidr
        self.extra_sans = extra_sans
        self.real_node = real_node
        self.pki = workdir / "pki"
        self.port = 0
        self.admin_token = secrets.token_hex(16)
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self.processes: list[ManagedProcess] = []

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.port}"

    def _apiserver_mode_flags(self) -> list[str]:
        if not self.real_node:
            # No controller-manager runs, so nothing would create the `default`
            # ServiceAccount that this admission plugin insists on for pods.
            return ["--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"]
        # The API server's client certificate for its calls to the kubelet (logs, exec).
        client = "apiserver-kubelet-client"
        _openssl("req", "-newkey", "rsa:2048", "-nodes",
                 "-subj", f"/O=system:masters/CN={client}",
                 "-keyout", f"{client}.key", "-out", f"{client}.csr", cwd=self.pki)
        (self.pki / f"{client}.ext").write_text("extendedKeyUsage=clientAuth\n")
        _openssl("x509", "-req", "-in", f"{client}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{client}.ext",
                 "-out", f"{client}.crt", cwd=self.pki)
        return ["--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={self.pki / f'{client}.crt'}",
                f"--kubelet-client-key={self.pki / f'{client}.key'}",
                f"--kubelet-certificate-authority={self.pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP"]

    def start(self, timeout: float = 120.0) -> None:
        make_pki(self.pki, self.extra_sans)
        client_port, peer_port, self.port = free_port(), free_port(), free_port()
        etcd = ManagedProcess("etcd", [
            tool_path("etcd"), "--name", "default", "--data-dir", self.workdir / "etcd",
            "--listen-client-urls", f"http://127.0.0.1:{client_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",  # test data; fsync only slows the suite
        ], self.workdir / "etcd.log")
        self.processes.append(etcd)
        wait_for_port(client_port, 30, etcd.popen)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},uid-admin,"system:masters"\n')
        apiserver = ManagedProcess("kube-apiserver", [
            tool_path("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{client_port}",
            f"--bind-address={self.address}", f"--advertise-address={self.address}",
            f"--secure-port={self.port}",
            f"--tls-cert-file={self.pki / 'apiserver.crt'}",
            f"--tls-private-key-file={self.pki / 'apiserver.key'}",
            f"--client-ca-file={self.pki / 'ca.crt'}",
            f"--token-auth-file={tokens}",
            *self._apiserver_mode_flags(),
            f"--service-cluster-ip-range={self.service_cidr}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            "--allow-privileged=true",
            f"--cert-dir={self.workdir / 'certs'}",
        ], self.workdir / "kube-apiserver.log")
        self.processes.append(apiserver)
        self.admin_kubeconfig.write_text(yaml.safe_dump(
            kubeconfig(self.server, self.pki / "ca.crt", self.admin_token, ADMIN_USER)))
        self._wait_ready(apiserver, timeout)

    def _wait_ready(self, apiserver: ManagedProcess, timeout: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"})
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not apiserver.alive():
                raise RuntimeError(f"kube-apiserver exited:\n{apiserver.log_tail()}")
            try:
                with urllib.request.urlopen(request, context=ctx, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.5)
        raise TimeoutError(f"kube-apiserver not ready in {timeout:.0f}s ({last}):\n"
                           f"{apiserver.log_tail()}")

    def stop_apiserver(self) -> list[str]:
        """An API server outage (etcd keeps the data); returns what restart needs."""
        apiserver = self.processes.pop()
        argv = [str(a) for a in list(apiserver.popen.args)]  # type: ignore[arg-type]
        apiserver.stop()
        return argv

    def start_apiserver(self, argv: list[str], timeout: float = 120.0) -> None:
        apiserver = ManagedProcess("kube-apiserver", argv, self.workdir / "kube-apiserver.log")
        self.processes.append(apiserver)
        self._wait_ready(apiserver, timeout)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    # --- clients -----------------------------------------------------------
    def api_client(self, config_file: Path | None = None) -> Any:
        """A kubernetes.client.ApiClient for the admin or the given kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(config_file or self.admin_kubeconfig))

    def kubectl(self, *args: str, kubeconfig_path: Path | None = None, check: bool = True,
                input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(tool_path("kubectl")), f"--kubeconfig={kubeconfig_path or self.admin_kubeconfig}",
             *args], capture_output=True, text=True, input=input_text, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} exited {result.returncode}: "
                               f"{result.stderr.strip()}")
        return result

    def serviceaccount_kubeconfig(self, namespace: str, name: str) -> Path:
        """Credentials of a real ServiceAccount token (TokenRequest), created if needed."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.api_client())
        try:
            core.create_namespace({"metadata": {"name": namespace}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        try:
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        token = core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": 3600 * 6}}).status.token
        path = self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(
            self.server, self.pki / "ca.crt", token, f"system:serviceaccount:{namespace}:{name}")))
        return path
