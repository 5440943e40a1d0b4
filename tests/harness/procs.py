"""Background processes of the test world, and cleanup of what a killed run left.

Every process is started in its own session with PDEATHSIG, so it dies with the
test run; its pid is also recorded under STATE_DIR so the next run can reap it
if the run was SIGKILLed before PDEATHSIG could fire (e.g. a killed sudo).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

STATE_DIR = Path(os.environ.get("TRACEPROBE_TEST_STATE", "/run/traceprobe-tests"))
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _start_time(pid: int) -> str | None:
    try:
        # Field 22 of /proc/PID/stat; the command name (field 2) may contain spaces.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


# Below the kernel's ephemeral range (32768+ by default): a port picked there
# can be taken by some outgoing connection before our server binds it.
_PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A loopback TCP port that is free now, outside the ephemeral range."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_PORT_RANGE}")


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None,
                  host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout:.0f}s")


class ManagedProcess:
    """A child process with a log file, stopped (with its whole group) by stop()."""

    def __init__(self, name: str, argv: Sequence[str | os.PathLike[str]], log: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 state_dir: Path = STATE_DIR) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                [str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._record = state_dir / "procs" / str(self.popen.pid)
        self._record.parent.mkdir(parents=True, exist_ok=True)
        self._record.write_text(f"{_start_time(self.popen.pid)}\n{name}\n")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        self._record.unlink(missing_ok=True)


_run_locks: list[int] = []


def claim_run(state_dir: Path = STATE_DIR) -> bool:
    """Mark this test run live (a shared lock held until exit).

    True when no other run is live, i.e. leftovers are a dead run's and safe
    to reap; False when another run is going, whose world must not be touched.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        alone = True
    except BlockingIOError:
        alone = False
    fcntl.flock(fd, fcntl.LOCK_SH)
    _run_locks.append(fd)
    return alone


def reap_stale_processes(state_dir: Path = STATE_DIR) -> list[str]:
    """Kill processes a previous (killed) run recorded; return their names."""
    reaped: list[str] = []
    for record in sorted((state_dir / "procs").glob("*")):
        pid = int(record.name)
        started, _, name = record.read_text().partition("\n")
        if _start_time(pid) == started.strip():  # same process, not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            reaped.append(name.strip())
        record.unlink(missing_ok=True)
    return reaped
