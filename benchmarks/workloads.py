"""The workloads: a server in one namespace, the generator's clients in another
(or the same, for loopback), run for a fixed time; results from both ends. The HTTP
workload's server and clients are nginx and wrk (http_workload.py), the rest are
loadgen.c's."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import http_workload, procs
from benchmarks.netns import Namespaces, Placement, in_ns

CHURN_PORT, BULK_PORT, UDP_PORT, HTTP_PORT = 7070, 7071, 7072, 7073
REQUEST_BYTES, RESPONSE_BYTES = 64, 256
CHUNK_BYTES = 128 * 1024
NAMES = ("loopback-churn", "netns-churn", "loopback-bulk", "netns-bulk", "loopback-udp",
         "netns-udp", "netns-http")


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "churn", "bulk", "udp" (request/response datagrams) or "http" (requests)

    @property
    def exchanges(self) -> bool:
        """Counted in exchanges (a connection, a datagram or request answered), not in
        bytes."""
        return self.kind != "bulk"
    where: Placement
    port: int


@dataclass(frozen=True)
class Settings:
    seconds: float
    threads: int = 4          # churn client threads
    server_workers: int = 4   # churn server accept threads
    bulk_connections: int = 1
    pin_bulk: bool = True     # bulk sender on CPU 0, receiver on CPU 1: steadier numbers
    http_threads: int = 2     # wrk's threads
    http_connections: int = 8  # wrk's keep-alive connections, shared by its threads


@dataclass
class WorkloadResult:
    workload: Workload
    seconds: float
    completed: int             # churn: connections; bulk: streamed; udp, http: answered
    failed: int
    bytes_sent: int            # client payload written
    server_accepted: int
    server_bytes_received: int
    client_pid: int
    server_pid: int
    client_cpu: float
    server_cpu: float
    errors: dict[str, int] = field(default_factory=dict)
    # http: requests are not connections. The client's connections (None: completed +
    # failed, as for churn), requests the server answered (wrk leaves out those still in
    # flight when it stops) and the server's worker processes (they own the sockets).
    connections: int | None = None
    served: int | None = None
    server_workers: tuple[int, ...] = ()

    @property
    def rate(self) -> float:
        """Connections/s (churn), answered datagrams/s (udp) or requests/s (http), or
        bytes/s (bulk)."""
        done = self.completed if self.workload.exchanges else self.bytes_sent
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def attempted(self) -> int:
        """Connections (churn, http) or datagrams (udp) the clients tried."""
        return self.connections if self.connections is not None else (
            self.completed + self.failed)


# What a workload's rate counts.
UNITS = {"churn": "conn", "udp": "exch", "http": "req", "bulk": "MiB"}


def kind_of(name: str) -> str:
    """"netns-udp" -> "udp": names are placement-kind."""
    return name.rsplit("-", 1)[-1]


def all_workloads(ns: Namespaces) -> dict[str, Workload]:
    return {
        "loopback-churn": Workload("loopback-churn", "churn", ns.loopback, CHURN_PORT),
        "netns-churn": Workload("netns-churn", "churn", ns.veth, CHURN_PORT),
        "loopback-bulk": Workload("loopback-bulk", "bulk", ns.loopback, BULK_PORT),
        "netns-bulk": Workload("netns-bulk", "bulk", ns.veth, BULK_PORT),
        "loopback-udp": Workload("loopback-udp", "udp", ns.loopback, UDP_PORT),
        "netns-udp": Workload("netns-udp", "udp", ns.veth, UDP_PORT),
        "netns-http": Workload("netns-http", "http", ns.veth, HTTP_PORT),
    }


def _last_json(text: str, who: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    raise RuntimeError(f"{who} printed no result: {text.strip()[-300:]!r}")


def run(workload: Workload, settings: Settings, binary: Path) -> WorkloadResult:
    """Start the server, run the clients for settings.seconds, stop the server."""
    if workload.kind == "http":
        return http_workload.run(workload, settings)
    w, exe, ip, port = workload.where, str(binary), workload.where.server_ip, str(workload.port)
    if workload.exchanges:  # the same sizes, over connections or datagrams
        serve, dial = ("serve", "churn") if workload.kind == "churn" else (
            "udpserve", "udpping")
        server_argv = [exe, serve, ip, port, str(settings.server_workers),
                       str(REQUEST_BYTES), str(RESPONSE_BYTES)]
        client_argv = [exe, dial, ip, port, str(settings.threads), str(settings.seconds),
                       str(REQUEST_BYTES), str(RESPONSE_BYTES)]
    else:
        server_argv = [exe, "sink", ip, port]
        client_argv = [exe, "bulk", ip, port, str(settings.bulk_connections),
                       str(settings.seconds), str(CHUNK_BYTES)]
    pin = workload.kind == "bulk" and settings.pin_bulk and (os.cpu_count() or 1) >= 2
    server = procs.spawn(in_ns(w.server_ns, server_argv), {1} if pin else None,
                         stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            _, err = server.communicate(timeout=5)
            raise RuntimeError(f"{workload.name}: server did not start: {err.strip()}")
        client = procs.spawn(in_ns(w.client_ns, client_argv), {0} if pin else None,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            out, err = client.communicate(timeout=settings.seconds + 60)
        finally:
            procs.stop(client, timeout=5)
        got = _last_json(out, f"{workload.name} client (stderr: {err.strip()[-200:]})")
    finally:
        procs.stop(server, timeout=10)
    served = _last_json(server.stdout.read(), f"{workload.name} server")
    return WorkloadResult(
        workload=workload, seconds=float(got["seconds"]), completed=int(got["completed"]),
        failed=int(got["failed"]), bytes_sent=int(got["bytes_sent"]),
        server_accepted=int(served["accepted"]),
        server_bytes_received=int(served["bytes_received"]),
        client_pid=client.pid, server_pid=server.pid,
        client_cpu=float(got["cpu_seconds"]), server_cpu=float(served["cpu_seconds"]),
        errors={**got.get("errors", {}), **{f"server {k}": v
                                            for k, v in served.get("errors", {}).items()}},
    )
