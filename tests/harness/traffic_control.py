"""Driving tests/harness/traffic.py inside pods: start servers, dial, stop."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

TRAFFIC = str(Path(__file__).resolve().parent / "traffic.py")
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


def stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()
