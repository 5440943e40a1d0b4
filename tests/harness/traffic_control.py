"""Driving tests/harness/traffic.py inside pods: start servers, dial, stop."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

TRAFFIC = str(Path(__file__).resolve().parent / "traffic.py")
HTTP_TRAFFIC = str(Path(__file__).resolve().parent / "http_traffic.py")
GRPC_TRAFFIC = str(Path(__file__).resolve().parent / "grpc_traffic.py")
PY = "/usr/bin/python3"  # Debian's: present on every node, stdlib is all traffic.py needs


def serve(pod: Any, port: int, response: int, *extra: str) -> subprocess.Popen[str]:
    proc: subprocess.Popen[str] = pod.popen(
        [PY, TRAFFIC, "serve", str(port), str(response), *extra],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def dial(pod: Any, host: str, port: int, request: int, *extra: str) -> dict[str, Any]:
    out = pod.run([PY, TRAFFIC, "dial", host, str(port), str(request), *extra], timeout=120)
    return dict(json.loads(out.stdout))


def udp_echo(pod: Any, port: int, count: int = 0) -> subprocess.Popen[str]:
    """A UDP echo server in `pod`, IPv4 and IPv6, for `count` datagrams (0: until
    stopped); finish() reads what it saw."""
    proc: subprocess.Popen[str] = pod.popen(
        [PY, TRAFFIC, "udp-echo", str(port), "--count", str(count), "--family", "46"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def udp_call(pod: Any, host: str, host6: str, port: int, sizes: list[int],
             *extra: str) -> dict[str, Any]:
    """traffic.py udp-call in `pod` (host6 "": IPv4 only); its JSON line."""
    out = pod.run([PY, TRAFFIC, "udp-call", host, str(port), *map(str, sizes),
                   "--host6", host6, *extra], timeout=120)
    return dict(json.loads(out.stdout))


def http_serve(pod: Any, port: int, *extra: str) -> subprocess.Popen[str]:
    """http_traffic.py's HTTP/1.1 server in `pod`, once it listens."""
    proc: subprocess.Popen[str] = pod.popen([PY, HTTP_TRAFFIC, "serve", str(port), *extra],
                                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def http_call(pod: Any, host: str, port: int, *requests: str) -> list[dict[str, Any]]:
    """http_traffic.py call in `pod`: each request's method, status and seconds."""
    out = pod.run([PY, HTTP_TRAFFIC, "call", host, str(port), *requests], timeout=120)
    return list(json.loads(out.stdout))


def finish(proc: subprocess.Popen[str], timeout: float = 10) -> dict[str, Any]:
    """The last JSON line of a server that exits by itself."""
    out, _ = proc.communicate(timeout=timeout)
    return dict(json.loads(out.strip().splitlines()[-1]))


def stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()
