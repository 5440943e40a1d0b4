"""Throwaway certificate authorities and the certificates they sign (openssl)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)
    return directory / f"{name}.crt"


def sign_cert(directory: Path, ca: Path, name: str, cn: str, orgs: tuple[str, ...] = (),
              sans: tuple[str, ...] = (), server: bool = False) -> tuple[Path, Path]:
    """A key and a client (or serving) certificate signed by `ca` (its key beside it):
    (cert, key), both in `directory`."""
    subject = "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"
    ext = ["keyUsage=critical,digitalSignature,keyEncipherment",
           f"extendedKeyUsage={'serverAuth' if server else 'clientAuth'}"]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    (directory / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca), "-CAkey",
             str(ca.with_suffix(".key")), "-CAcreateserial", "-days", "2",
             "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=directory)
    return directory / f"{name}.crt", directory / f"{name}.key"


def server_cert(directory: Path, ca: Path, name: str) -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1/localhost signed by `ca`: (cert, key)."""
    return sign_cert(directory, ca, name, name, sans=("IP:127.0.0.1", "DNS:localhost"),
                     server=True)


def cert_kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> dict[str, Any]:
    """A kubeconfig that authenticates with a client certificate."""
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "node", "cluster": {"server": server,
                                                  "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert),
                                          "client-key": str(key)}}],
        "contexts": [{"name": "node", "context": {"cluster": "node", "user": user}}],
    }
