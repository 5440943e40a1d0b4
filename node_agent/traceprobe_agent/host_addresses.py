"""This node's own addresses, as its host network stack has them (pure parsing).

A host process or hostNetwork pod reaching a pod on the same node leaves from
whichever host address the route picks: the CNI bridge's gateway, a tunnel
device, a second NIC. Node.status.addresses lists only one or two of them, so a
server-side record would name such a peer "external". The agent runs in the host
network namespace and reads the kernel's list of local addresses instead.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

FIB_TRIE = Path("/proc/net/fib_trie")
IF_INET6 = Path("/proc/net/if_inet6")


def ipv4_local(fib_trie: str) -> set[str]:
    """Addresses of "/32 host LOCAL" leaves: the kernel's local routes."""
    found: set[str] = set()
    last = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|--"):
            last = text[3:].strip()
        elif text.startswith("/32 host LOCAL") and last:
            found.add(last)
    return found


def ipv6_local(if_inet6: str) -> set[str]:
    """One address per line: 32 hex digits, then index, prefix, scope, flags, device."""
    found: set[str] = set()
    for line in if_inet6.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
            except ValueError:
                continue
    return found


def node_addresses(fib_trie: str, if_inet6: str) -> frozenset[str]:
    """The node's addresses other than loopback (a loopback peer is the same host or
    pod, not another workload: the map leaves those out)."""
    every = ipv4_local(fib_trie) | ipv6_local(if_inet6)
    return frozenset(a for a in every if not ipaddress.ip_address(a).is_loopback)


def read_node_addresses() -> frozenset[str]:
    """From the kernel, for the network namespace this process runs in (empty when
    /proc/net cannot be read)."""
    texts = []
    for path in (FIB_TRIE, IF_INET6):
        try:
            texts.append(path.read_text())
        except OSError:
            texts.append("")
    return node_addresses(*texts)


class NodeAddresses:
    """read_node_addresses(), re-read at most every `max_age` seconds: addresses come
    and go (a CNI bridge appears with the first pod) but rarely."""

    def __init__(self, read: Callable[[], frozenset[str]] = read_node_addresses,
                 max_age: float = 10.0) -> None:
        self._read = read
        self._max_age = max_age
        self._at = -float("inf")
        self._addresses: frozenset[str] = frozenset()

    def __call__(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self._at >= self._max_age:
            self._addresses, self._at = self._read(), now
        return self._addresses
