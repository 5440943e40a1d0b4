"""The one module that imports ``bcc`` (an import-linter contract enforces it).

Everything else in the agent talks to the kernel through this thin layer, so
the rest stays testable without root and BCC's Python API has one owner.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from typing import Any

from traceprobe_agent.bpf_links import (
    BpfUnavailable,
    CgroupAttach,
    CgroupVerdicts,
    close_fds,
    link_cgroup,
    page_out_compiler,
    return_freed_memory,
)
from traceprobe_agent.kernel_headers import KERNEL_SOURCE_ENV, find_kernel_headers
from traceprobe_agent.kernel_rows import add_requests, edge_key, edge_value

__all__ = ["BpfUnavailable", "CgroupAttach", "ConnTracker", "DnsTap", "preflight"]

def _import_bcc() -> Any:
    try:
        import bcc
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise BpfUnavailable(
            "Python module 'bcc' not importable: install Debian's python3-bpfcc "
            "(make setup does) and use a venv that can see it"
        ) from exc
    return bcc


def raw_tracepoints_supported() -> bool:
    try:
        return bool(_import_bcc().BPF.support_raw_tracepoint())
    except BpfUnavailable:
        return False


def preflight() -> None:
    """Raise BpfUnavailable with a clear reason when BPF programs can't be loaded."""
    if os.geteuid() != 0:
        raise BpfUnavailable("not running as root: loading BPF programs needs root")
    if not os.path.isdir("/sys/kernel/tracing/events") and not os.path.isdir(
        "/sys/kernel/debug/tracing/events"
    ):
        raise BpfUnavailable(
            "tracefs not mounted: mount -t tracefs nodev /sys/kernel/tracing"
        )
    if find_kernel_headers() is None:
        raise BpfUnavailable(
            f"no kernel headers: set {KERNEL_SOURCE_ENV} or link a header tree to "
            f"/lib/modules/{os.uname().release}/build (make setup does)"
        )
    _import_bcc()


COUNTER_NAMES = ("conn_map_full", "edge_map_full", "untracked_io", "unattributed_close",
                 "stale_replaced", "unselected", "preexisting_sockets", "request_map_full",
                 "http_desync", "http_pending_full", "http_unmatched", "dns_pending_full",
                 "dns_unmatched", "db_desync", "db_pending_full", "db_unmatched",
                 "db_skimmed")  # enum counter
# Programs may still be writing the map we just switched away from; they run
# for microseconds with preemption off, so this wait makes the drain lossless.
_FLIP_GRACE_SECONDS = 0.02


#: The sock_ops core's programs: function -> (BCC program type name, where it links).
SOCK_OPS_PROGRAMS = {"on_sock_create": ("CGROUP_SOCK", CgroupAttach.INET_SOCK_CREATE),
                     "on_sock_ops": ("SOCK_OPS", CgroupAttach.SOCK_OPS),
                     "on_egress": ("CGROUP_SKB", CgroupAttach.INET_EGRESS),
                     "on_ingress": ("CGROUP_SKB", CgroupAttach.INET_INGRESS),
                     "on_udp4_sendmsg": ("CGROUP_SOCK_ADDR", CgroupAttach.UDP4_SENDMSG),
                     "on_udp6_sendmsg": ("CGROUP_SOCK_ADDR", CgroupAttach.UDP6_SENDMSG)}


def load_cgroup_func(prog: Any, bpf: Any, name: str, kind: str, attach: CgroupAttach) -> Any:
    """Program `name` of the BCC module `prog` loaded as `kind` (a BPF.* program type
    name); a sock_addr program names its attach point at load, or the kernel refuses it."""
    if kind == "CGROUP_SOCK_ADDR":
        return prog.load_func(name.encode(), bpf.CGROUP_SOCK_ADDR, attach_type=int(attach))
    return prog.load_func(name.encode(), getattr(bpf, kind))


class ConnTracker:
    """A connection core loaded and attached; drain() returns raw edge counts.

    The tracepoint core (bpf/conn_tracker.c) attaches itself when BCC compiles it;
    the sock_ops core (bpf/sock_ops_core.c) has its `links` (SOCK_OPS_PROGRAMS) linked
    to `cgroup_dir`, and holds at most `max_connections` (its own count, `live`).
    Raw edges are (key fields, value fields) dicts of plain ints/bytes, so the
    pure modules turning them into records never see ctypes or bcc.
    """

    def __init__(self, source: str, cflags: list[str],
                 kprobes: tuple[tuple[str, str, str], ...] = (),
                 cgroup_dir: str | None = None, links: tuple[str, ...] = (),
                 max_connections: int = 0,
                 tail_calls: tuple[tuple[str, int, str], ...] = (),
                 requests: bool = False) -> None:
        preflight()
        self._bcc = _import_bcc()
        self._fds: list[int] = []
        self._linked: list[str] = []
        self._tail_called: list[str] = []  # loaded and held too: listed with the rest
        self._prog = self._bcc.BPF(text=source.encode(), cflags=cflags)
        return_freed_memory()
        page_out_compiler()
        self._max_connections = max_connections
        if links:
            if cgroup_dir is None:
                raise ValueError("the sock_ops core's programs need a cgroup v2 directory")
            self._link_sock_ops(cgroup_dir, links, tail_calls)
        self.kprobe_problem = self._attach_kprobes(kprobes)
        self._active = self._prog["active"]
        self._maps = (self._prog["edges0"], self._prog["edges1"])
        self._requests = (self._prog["requests0"], self._prog["requests1"]) if requests \
            else ()
        self.verdicts = CgroupVerdicts(self._prog["cgroup_verdicts"])
        self._selected = 0
        self.batch_ops = True

    def _link_sock_ops(self, cgroup_dir: str, links: tuple[str, ...],
                       tail_calls: tuple[tuple[str, int, str], ...]) -> None:
        """All of `links` linked, or none (BpfUnavailable); `tail_calls` (program array,
        index, program) are loaded first, as cgroup_skb programs the links call."""
        try:
            for table, index, name in tail_calls:
                fn = self._prog.load_func(name.encode(), self._bcc.BPF.CGROUP_SKB)
                progs = self._prog[table]
                progs[progs.Key(index)] = progs.Leaf(fn.fd)
                self._tail_called.append(f"tail_call/{name}")
            for name in links:
                kind, attach = SOCK_OPS_PROGRAMS[name]
                fn = load_cgroup_func(self._prog, self._bcc.BPF, name, kind, attach)
                self._fds.extend(link_cgroup(fn.fd, cgroup_dir, attach))
                self._linked.append(f"cgroup/{name}")
        except Exception as exc:  # bcc raises bare Exception: one named error instead
            self.close()
            if isinstance(exc, BpfUnavailable):
                raise
            raise BpfUnavailable(f"the sock_ops core did not load: {exc}") from exc

    def _attach_kprobes(self, kprobes: tuple[tuple[str, str, str], ...]) -> str | None:
        """Attach fallbacks (kind, function, program); all or none. The reason on failure."""
        self._kprobes: list[str] = []
        self.verified: list[str] = []  # fallback programs the kernel's verifier accepted
        try:
            for _, _, program in kprobes:  # load first: a verifier refusal is its own error
                self._prog.load_func(program, self._bcc.BPF.KPROBE)
                self.verified.append(program)
            for kind, function, program in kprobes:
                attach = (self._prog.attach_kretprobe if kind == "kretprobe"
                          else self._prog.attach_kprobe)
                attach(event=function, fn_name=program)
                self._kprobes.append(f"{kind}/{function}")
        except Exception as exc:  # bcc raises bare Exception
            for kind, function, _ in kprobes:
                with contextlib.suppress(Exception):
                    if kind == "kretprobe":
                        self._prog.detach_kretprobe(event=function)
                    else:
                        self._prog.detach_kprobe(event=function)
            self._kprobes = []
            return f"kprobe fallback could not attach: {exc}"
        return None

    def program_ids(self) -> list[str]:
        def text(name: Any) -> str:
            return name.decode() if isinstance(name, bytes) else str(name)

        return sorted([f"tracepoint/{text(tp)}" for tp in self._prog.tracepoint_fds]
                      + [f"raw_tracepoint/{text(tp)}" for tp in self._prog.raw_tracepoint_fds]
                      + self._kprobes + self._linked + self._tail_called)

    def drain(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Everything counted since the last drain (the other map keeps counting); an
        edge's answered requests (probe kind http) are its value's `requests`."""
        old = self._selected
        self._selected = 1 - old
        self._active[self._active.Key(0)] = self._active.Leaf(self._selected)
        time.sleep(_FLIP_GRACE_SECONDS)
        edges = [(edge_key(k), edge_value(v)) for k, v in self._take(self._maps[old])]
        if self._requests:
            add_requests(edges, [(edge_key(k.edge), k, v)
                                 for k, v in self._take(self._requests[old])])
        # The batch buffers are sized for a full map (MBs); hand them back now.
        return_freed_memory()
        return edges

    def _take(self, table: Any) -> list[tuple[Any, Any]]:
        """Every entry of `table`, deleted from it."""
        if self.batch_ops:
            try:
                return list(table.items_lookup_and_delete_batch())
            except Exception:  # kernel without batch ops: fall back, keep working
                self.batch_ops = False
        items = list(table.items())
        for key, _ in items:
            del table[key]
        return items

    def counters(self) -> dict[str, int]:
        table = self._prog["counters"]
        return {name: int(sum(table[table.Key(i)])) for i, name in enumerate(COUNTER_NAMES)}

    def map_usage(self) -> dict[str, tuple[int, int]]:
        """name -> (entries, capacity); counting entries walks the map, so call rarely."""
        usage = {}
        names = ("conns", "edges0", "edges1", "cgroup_verdicts")
        for name in names if not self._linked else names[1:]:
            table = self._prog[name]
            usage[name] = (sum(1 for _ in table), int(table.max_entries))
        if self._linked:  # socket storage has no size of its own: the core counts
            live = self._prog["live"]
            usage["conns"] = (max(0, int(live[live.Key(0)].value)), self._max_connections)
        return usage

    def close(self) -> None:
        close_fds(self._fds)  # the links go with their fds
        self._prog.cleanup()


_DNS_MAX = 512  # as in bpf/dns_answers.c


class _DnsEvent(ctypes.Structure):
    _fields_ = [("cgroup", ctypes.c_uint64), ("len", ctypes.c_uint32),
                ("data", ctypes.c_ubyte * _DNS_MAX)]


class DnsTap:
    """bpf/dns_answers.c on a cgroup v2 directory: consume() returns the DNS responses
    delivered below it since the last call (raw bytes, for the pure parser).

    Attached through a BPF link, not BPF_PROG_ATTACH: a link goes with the last fd,
    so a killed agent leaves nothing attached to the cgroup.
    """

    def __init__(self, source: str, cgroup_dir: str, cflags: list[str] | None = None) -> None:
        preflight()
        bcc = _import_bcc()
        self._pending: list[tuple[int, bytes]] = []
        self._cgroup_fd = self._link_fd = -1
        self._prog: Any = None
        try:
            self._prog = bcc.BPF(text=source.encode(), cflags=cflags or [])
            return_freed_memory()
            page_out_compiler()  # as after the connection program's compile (~45 MB)
            fn = self._prog.load_func("dns_ingress", bcc.BPF.CGROUP_SKB)
            self._cgroup_fd, self._link_fd = link_cgroup(fn.fd, cgroup_dir)
            self._prog["dns_events"].open_ring_buffer(self._on_event)
            self.verdicts = CgroupVerdicts(self._prog["cgroup_verdicts"])
        except Exception as exc:  # bcc raises bare Exception: one named error for the caller
            self.close()
            if isinstance(exc, BpfUnavailable):
                raise
            raise BpfUnavailable(f"the DNS tap did not load: {exc}") from exc

    def _on_event(self, _ctx: Any, data: Any, _size: int) -> None:
        event = ctypes.cast(data, ctypes.POINTER(_DnsEvent)).contents
        self._pending.append((int(event.cgroup),
                              bytes(event.data[:min(int(event.len), _DNS_MAX)])))

    @staticmethod
    def program_ids() -> list[str]:
        return ["cgroup_skb/dns_ingress"]

    def consume(self) -> list[tuple[int, bytes]]:
        """(cgroup id of the receiving process, response bytes) since the last call."""
        self._prog.ring_buffer_consume()
        out, self._pending = self._pending, []
        return out

    def counters(self) -> dict[str, int]:
        table = self._prog["dns_counters"]
        return {name: int(sum(table[table.Key(i)])) for i, name in
                enumerate(("dns_responses", "dns_responses_lost", "dns_unselected"))}

    def close(self) -> None:
        close_fds([fd for fd in (self._link_fd, self._cgroup_fd) if fd >= 0])
        self._link_fd = self._cgroup_fd = -1
        if self._prog is not None:
            self._prog.cleanup()
