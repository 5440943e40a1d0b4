"""The benchmark's own network namespaces, all named `tpb-<pid>-*`.

- `tpb-<pid>-lo`: loopback workloads (127.0.0.1 inside the namespace), so the
  benchmark's sysctls and TIME_WAIT sockets never touch the host's namespace.
- `tpb-<pid>-c` / `tpb-<pid>-s`: client and server joined by a veth pair
  (`tpb-c` 10.250.0.1/24 <-> `tpb-s` 10.250.0.2/24), created inside the
  namespaces so no link ever appears in the host's namespace.

No routes lead anywhere else. Namespaces of a run that died without cleaning up
(its pid is gone) are removed by the next run, and so is every process still inside
them (nginx's workers outlive a SIGKILLed master).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass

PREFIX = "tpb-"
CLIENT_IP, SERVER_IP = "10.250.0.1", "10.250.0.2"
LOOPBACK_IP = "127.0.0.1"
_NAME = re.compile(r"^tpb-(\d+)-(lo|c|s)$")
_SYSCTLS = {
    "net.core.somaxconn": "4096",
    "net.ipv4.tcp_max_syn_backlog": "4096",
    "net.ipv4.ip_local_port_range": "1024 65000",
    # No TIME_WAIT sockets: otherwise each run inherits the previous run's (up to
    # the bucket limit, for 60 s), and later runs would see a fuller table.
    "net.ipv4.tcp_max_tw_buckets": "0",
}


@dataclass(frozen=True)
class Placement:
    """Where a workload's client and server run, and the address the client dials."""

    label: str
    client_ns: str
    server_ns: str
    server_ip: str


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def in_ns(ns: str, argv: list[str]) -> list[str]:
    """argv run inside namespace `ns` (`ip netns exec` execs it: same pid)."""
    return ["ip", "netns", "exec", ns, *argv]


def list_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete(name: str) -> None:
    """Delete a namespace and end what still runs in it: deleting it alone would leave
    those processes serving in a namespace no one can reach."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                          text=True).stdout.split()
    for pid in pids:
        if pid.isdigit() and int(pid) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def reap_stale() -> list[str]:
    """Delete tpb-* namespaces left by runs that no longer exist; return their names."""
    removed = []
    for name in list_namespaces():
        m = _NAME.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            _delete(name)
            removed.append(name)
    return removed


class Namespaces:
    """Creates the namespaces on enter and removes them on exit (also on errors)."""

    def __init__(self) -> None:
        base = f"{PREFIX}{os.getpid()}"
        self.lo, self.client, self.server = f"{base}-lo", f"{base}-c", f"{base}-s"
        self.created: list[str] = []

    @property
    def loopback(self) -> Placement:
        return Placement("loopback", self.lo, self.lo, LOOPBACK_IP)

    @property
    def veth(self) -> Placement:
        return Placement("netns", self.client, self.server, SERVER_IP)

    def __enter__(self) -> Namespaces:
        try:
            self.create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def create(self) -> None:
        for ns in (self.lo, self.client, self.server):
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            for key, value in _SYSCTLS.items():
                subprocess.run(in_ns(ns, ["sysctl", "-qw", f"{key}={value}"]),
                               check=True, capture_output=True)
        _ip("-n", self.client, "link", "add", "tpb-c", "type", "veth",
            "peer", "name", "tpb-s", "netns", self.server)
        for ns, dev, ip in ((self.client, "tpb-c", CLIENT_IP), (self.server, "tpb-s", SERVER_IP)):
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def remove(self) -> None:
        # Deleting a namespace removes its veth end, and with it the peer.
        for ns in reversed(self.created):
            _delete(ns)
        self.created.clear()
