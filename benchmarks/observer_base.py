"""What every observer under test is: started fresh for one workload, waited for until
attached, stopped, then asked what it recorded of the workload's traffic."""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.workloads import WorkloadResult


class ObserverFailed(RuntimeError):
    """The observer could not start or stop; the message says why."""


@dataclass
class Accounting:
    """What the observer recorded about one workload's traffic (None: not available)."""

    client_conns: int | None = None   # opened + refused + timeouts, client side
    server_conns: int | None = None   # opened, server side
    client_bytes: int | None = None   # bytes sent, client side
    server_bytes: int | None = None   # bytes received, server side
    client_requests: int | None = None  # http requests answered, client side
    server_requests: int | None = None  # http requests answered, server side
    drops: dict[str, int] = field(default_factory=dict)


class Observer:
    name: str
    proc: subprocess.Popen[Any]
    udp = False  # the workload is UDP: an agent turns its udp probe kind on

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="tpb-")
        self.out_path = Path(self.tmp.name) / "stdout"
        self.err_path = Path(self.tmp.name) / "stderr"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float) -> None:
        raise NotImplementedError

    def before_stop(self) -> None:
        """Called after the workload and a settling pause, while still running."""

    def stop(self) -> None:
        raise NotImplementedError

    def account(self, result: WorkloadResult) -> Accounting:
        raise NotImplementedError

    def close(self) -> None:
        if getattr(self, "proc", None) is not None:
            procs.stop(self.proc, timeout=5)
        self.tmp.cleanup()

    def _wait_until(self, ready: threading.Event | None, timeout: float,
                    predicate: Any = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (ready is not None and ready.wait(0.1)) or (predicate and predicate()):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        code = self.proc.poll()
        said = tail(self.err_path) or tail(self.out_path)
        state = f"exited with {code}" if code is not None else f"not ready after {timeout:.0f}s"
        raise ObserverFailed(f"{self.name} {state}: {said}")


def tail(path: Path, chars: int = 400) -> str:
    try:
        return path.read_text(errors="replace").strip()[-chars:]
    except OSError:
        return ""
