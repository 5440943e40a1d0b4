"""The service map run as the real program (`python -m traceprobe_map`) from a test: its
command line on loopback ports, an environment with nothing the map reads, one run's exit
status and stderr, a run kept going while a test talks to it, and the PEM files (good,
mismatched and broken) its TLS flags and OTLP variables are given."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from harness.pki import make_ca, server_cert, sign_cert
from harness.tools import REPO
from harness.waiting import wait_until
from traceprobe_map.settings import CLUSTER_NAME_ENV

MAP = [sys.executable, "-m", "traceprobe_map"]
LOCAL = ["--http-host", "127.0.0.1", "--http-port", "0", "--ingest-address", "127.0.0.1:0"]
BASE = ["--no-kubernetes", *LOCAL]
E = "OTEL_EXPORTER_OTLP_"
GRPC = {f"{E}ENDPOINT": "http://127.0.0.1:4317"}
TLS = {f"{E}ENDPOINT": "https://127.0.0.1:4317"}
HTTP = {f"{E}ENDPOINT": "https://127.0.0.1:4318", f"{E}PROTOCOL": "http/protobuf"}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything the map reads, plus `extra`."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "KUBE")) and k != CLUSTER_NAME_ENV}
    return {**keep, "HOME": "/nonexistent", "PYTHONUNBUFFERED": "1", **extra}


def make_pem(d: Path) -> dict[str, str]:
    """PEM files in `d` by name: a CA, a server and a client certificate it signed, one
    from another CA, garbage, plain text, a missing path and the directory itself."""
    ca = make_ca(d, "ca")
    cert, key = server_cert(d, ca, "server")
    client, client_key = sign_cert(d, ca, "client", "client")
    other_cert, other_key = server_cert(d, make_ca(d / "other", "other"), "other")
    (d / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n"
                                   "-----END CERTIFICATE-----\n")
    (d / "plain.txt").write_text("just text\n")
    return {"ca": str(ca), "cert": str(cert), "key": str(key), "client": str(client),
            "client_key": str(client_key), "other_cert": str(other_cert),
            "other_key": str(other_key), "garbage": str(d / "garbage.pem"),
            "text": str(d / "plain.txt"), "missing": str(d / "missing.pem"), "dir": str(d)}


def fill(text: str, values: dict[str, str]) -> str:
    """`text` with each {name} replaced by values[name]."""
    return re.sub(r"\{(\w+)\}", lambda m: values[m[1]], text)


def run(args: list[str], env: dict[str, str]) -> tuple[int | None, str]:
    """One run of the map: (exit status, stderr); status None if it started and served."""
    try:
        done = subprocess.run([*MAP, *args], env=clean_env(**env), cwd=REPO, text=True,
                              capture_output=True, timeout=30)
    except subprocess.TimeoutExpired as exc:  # it started: the value was taken
        return None, str(exc.stderr or "")
    return done.returncode, done.stderr


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str]) -> Iterator[tuple[dict[str, int], list[str]]]:
    """The map running until the block ends: (its ready line's ports, its log so far)."""
    proc = subprocess.Popen([*MAP, *args], env=clean_env(**env), cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: list[str] = []
    stderr = proc.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")),
                              daemon=True)
    reader.start()
    try:
        ready = wait_until(lambda: next((json.loads(x) for x in lines if x.startswith("{")),
                                        None) or (proc.poll() is not None and "exited"),
                           timeout=30, what="the ready line")
        assert ready != "exited", "".join(lines)
        yield ready, lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, "".join(lines)
        reader.join(timeout=5)
        assert not any("Traceback" in x for x in lines), "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def get_status(port: int, path: str) -> int:
    """The HTTP status of GET `path` on the map's loopback HTTP port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return int(reply.status)
