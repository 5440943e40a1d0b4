"""`python -m traceprobe_map` starting against a real API server as its ServiceAccount:
it names the cluster; and when the API server does not answer at start, the map says
so once, serves all the same, and finds the server when it comes."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness.install import NAMESPACE, install
from harness.procs import ManagedProcess, free_port
from harness.tools import REPO
from harness.waiting import wait_until

LOCAL = ["--http-host", "127.0.0.1", "--ingest-address", "127.0.0.1:0"]


def _map(tmp: Path, kubeconfig: Path, http_port: int) -> ManagedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KUBE"))}
    return ManagedProcess("service-map", [sys.executable, "-m", "traceprobe_map", *LOCAL,
                                          "--http-port", str(http_port)],
                          tmp / "map.log", env={**env, "KUBECONFIG": str(kubeconfig),
                                                "PYTHONUNBUFFERED": "1"}, cwd=REPO)


def _namespaces_known(http_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    match = re.search(r'^traceprobe_map_objects\{kind="namespaces"\} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


def _log(proc: ManagedProcess) -> str:
    return proc.log.read_text(errors="replace")


@contextlib.contextmanager
def _forwarder(port: int, target: tuple[str, int]) -> Iterator[None]:
    """127.0.0.1:`port` relayed to `target` byte for byte (TLS passes through)."""
    server = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_the_map_as_its_serviceaccount_names_the_cluster(control_plane: Any,
                                                          tmp_path: Path) -> None:
    install(control_plane)
    kubeconfig = control_plane.serviceaccount_kubeconfig(NAMESPACE, "traceprobe-service-map")
    port = free_port()
    proc = _map(tmp_path, kubeconfig, port)
    try:
        wait_until(lambda: _namespaces_known(port) > 0, timeout=60, what="namespaces listed",
                   diagnose=proc.log_tail)
        assert "cannot reach the API server" not in _log(proc)
        assert "watching" not in _log(proc), proc.log_tail()  # no kind refused (RBAC)
    finally:
        proc.stop()
    assert proc.popen.returncode == 0 and "Traceback" not in _log(proc), proc.log_tail()


def test_an_api_server_away_at_start_is_said_once_and_found_when_it_comes(
        control_plane: Any, tmp_path: Path) -> None:
    install(control_plane)
    real = control_plane.serviceaccount_kubeconfig(NAMESPACE, "traceprobe-service-map")
    config = yaml.safe_load(Path(real).read_text())
    away = free_port()
    server = config["clusters"][0]["cluster"]["server"]
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{away}"
    kubeconfig = tmp_path / "away.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = _map(tmp_path, kubeconfig, port)
    try:
        wait_until(lambda: "cannot reach the API server" in _log(proc), timeout=30,
                   what="the line saying the API server is away", diagnose=proc.log_tail)
        # Serving meanwhile: the view, and the numbers (nothing named yet).
        assert _namespaces_known(port) == 0
        host, _, target = server.removeprefix("https://").rpartition(":")
        with _forwarder(away, (host, int(target))):
            wait_until(lambda: _namespaces_known(port) > 0, timeout=90,
                       what="namespaces listed once the API server answers",
                       diagnose=proc.log_tail)
            log = _log(proc)
        assert log.count("cannot reach the API server") == 1, log
        assert "reachable again" in log, log
    finally:
        proc.stop()
    assert proc.popen.returncode == 0 and "Traceback" not in _log(proc), proc.log_tail()
