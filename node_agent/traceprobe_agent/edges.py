"""Raw kernel edges (plain dicts from bcc_runtime) to ConnectionRecords (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from traceprobe_api.records import ConnectionRecord, RequestCounts, Role

AF_INET, AF_INET6 = 2, 10
# edge_maps.h's ROLE_*: (role, transport).
_ROLES = {1: (Role.CLIENT, "tcp"), 2: (Role.SERVER, "tcp"), 3: (Role.UDP, "udp"),
          4: (Role.CLIENT, "udp"), 5: (Role.SERVER, "udp")}


def format_ip(family: int, raw: bytes) -> str | None:
    """Text form; IPv4-mapped IPv6 (dual-stack sockets) becomes plain IPv4."""
    if family == AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    addr = ipaddress.IPv6Address(raw[:16])
    if addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return None if addr.is_unspecified else str(addr)


_SPAN = ("first_open_ns", "last_open_ns")
_NOT_COUNTS = {"comm", "requests", "unparsed", *_SPAN}


def _when(monotonic_ns: int, end: datetime, end_monotonic_ns: int,
          start: datetime) -> datetime | None:
    """A kernel (CLOCK_MONOTONIC) time as wall-clock time, clamped to [start, end]."""
    if not monotonic_ns:
        return None
    at = end - timedelta(microseconds=max(0, end_monotonic_ns - monotonic_ns) // 1000)
    return at if at > start else start


def to_record(key: dict[str, Any], val: dict[str, Any], node: str, start: datetime,
              end: datetime, cgroup_path: Callable[[int], str | None],
              end_monotonic_ns: int = 0) -> ConnectionRecord:
    """`end_monotonic_ns`: CLOCK_MONOTONIC at `end`, to place the kernel's opening
    times (0: leave the span out)."""
    role, transport = _ROLES[key["role"]]
    counts = {k: v for k, v in val.items() if k not in _NOT_COUNTS}
    if transport == "udp":  # the kernel keeps datagrams in the connection counters
        counts["datagrams_sent"] = counts.pop("opened", 0)
        counts["datagrams_received"] = counts.pop("closed", 0)
    first = last = None
    if end_monotonic_ns and role is not Role.UDP:
        first = _when(val.get("first_open_ns", 0), end, end_monotonic_ns, start)
        last = _when(val.get("last_open_ns", 0), end, end_monotonic_ns, start)
    family = key["family"]
    local = remote = None
    if role is not Role.UDP:
        local = format_ip(family, key["laddr"])
        remote = format_ip(family, key["raddr"])
    family_name = "ipv4" if family == AF_INET or (local and ":" not in local) else "ipv6"
    return ConnectionRecord(
        node=node, role=role, transport=transport,
        family=family_name, local_ip=local, remote_ip=remote,
        local_port=key["port"] if role is Role.SERVER else None,
        remote_port=key["port"] if role is Role.CLIENT else None,
        pid=key["tgid"] or None, comm=val.get("comm", ""), cgroup_id=key["cgroup"],
        cgroup_path=cgroup_path(key["cgroup"]) if key["cgroup"] else None,
        interval_start=start, interval_end=end, active_from=first, active_until=last,
        requests=[RequestCounts.model_validate(row) for row in val["requests"]]
        if val.get("requests") else None, unparsed=val.get("unparsed"),
        **counts,
    )


def mark_node_peers(records: list[ConnectionRecord], addresses: frozenset[str]) -> None:
    """Flag records whose remote address is this node's own (remote_on_node), in place:
    the records are fresh from the drain and the agent's alone."""
    if not addresses:
        return
    for record in records:
        if record.remote_ip in addresses:
            record.__dict__["remote_on_node"] = True
            record.__pydantic_fields_set__.add("remote_on_node")
