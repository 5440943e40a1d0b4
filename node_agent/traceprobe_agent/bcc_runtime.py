"""The one module that imports ``bcc`` (an import-linter contract enforces it).

Everything else in the agent talks to the kernel through this thin layer, so
the rest stays testable without root and BCC's Python API has one owner.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path
from typing import Any

from traceprobe_agent.kernel_headers import KERNEL_SOURCE_ENV, find_kernel_headers


class BpfUnavailable(RuntimeError):
    """BPF cannot be used here; the message names what is missing and the fix."""


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
                 "stale_replaced", "unselected")
EDGE_FIELDS = ("opened", "closed", "refused", "timeouts", "resets", "bytes_sent",
               "bytes_received", "retransmits", "rtt_sum_us", "rtt_samples", "rtt_max_us",
               "duration_sum_ns")
# Programs may still be writing the map we just switched away from; they run
# for microseconds with preemption off, so this wait makes the drain lossless.
_FLIP_GRACE_SECONDS = 0.02


_MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages now (clean file pages just drop)
_COMPILER_LIBS = ("libLLVM", "libclang")


def _page_out_compiler() -> int:
    """Drop the compiler's code pages from our resident set; return bytes advised.

    BCC links clang/LLVM into the agent; after a compile their ~80 MB of clean,
    file-backed pages sit idle until the next compile, which faults them back.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    advised = 0
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return 0
    for line in maps:
        fields = line.split()
        if len(fields) < 6 or not any(lib in fields[5] for lib in _COMPILER_LIBS):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start),
                        _MADV_PAGEOUT) == 0:
            advised += end - start
    return advised


class CgroupVerdicts:
    """A program's `cgroup_verdicts` map, written as the difference from what it holds:
    a full sync rewrites only the cgroups whose verdict changed. A cgroup the full map
    cannot take stays undecided there (the drain decides it); map_usage shows the fill."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._held: dict[int, int] = {}

    def sync(self, wanted: dict[int, int]) -> None:
        table = self._table
        for cgroup in [c for c in self._held if c not in wanted]:
            with contextlib.suppress(KeyError):
                del table[table.Key(cgroup)]
            del self._held[cgroup]
        for cgroup, verdict in wanted.items():
            if self._held.get(cgroup) == verdict:
                continue
            try:
                table[table.Key(cgroup)] = table.Leaf(verdict)
            except Exception:  # bcc raises bare Exception when the map is full
                continue
            self._held[cgroup] = verdict

    def __len__(self) -> int:
        return len(self._held)


def _return_freed_memory() -> None:
    """Clang/LLVM free tens of MB after a compile; glibc keeps them unless asked."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class ConnTracker:
    """bpf/conn_tracker.c loaded and attached; drain() returns raw edge counts.

    Raw edges are (key fields, value fields) dicts of plain ints/bytes, so the
    pure modules turning them into records never see ctypes or bcc.
    """

    def __init__(self, source: str, cflags: list[str],
                 kprobes: tuple[tuple[str, str, str], ...] = ()) -> None:
        preflight()
        self._bcc = _import_bcc()
        self._prog = self._bcc.BPF(text=source.encode(), cflags=cflags)
        _return_freed_memory()
        _page_out_compiler()
        self.kprobe_problem = self._attach_kprobes(kprobes)
        self._active = self._prog["active"]
        self._maps = (self._prog["edges0"], self._prog["edges1"])
        self.verdicts = CgroupVerdicts(self._prog["cgroup_verdicts"])
        self._selected = 0
        self.batch_ops = True

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
                      + self._kprobes)

    def drain(self) -> list[tuple[dict[str, Any], dict[str, int]]]:
        """Everything counted since the last drain (the other map keeps counting)."""
        import time

        old = self._selected
        self._selected = 1 - old
        self._active[self._active.Key(0)] = self._active.Leaf(self._selected)
        time.sleep(_FLIP_GRACE_SECONDS)
        table = self._maps[old]
        items: list[tuple[Any, Any]]
        if self.batch_ops:
            try:
                items = list(table.items_lookup_and_delete_batch())
            except Exception:  # kernel without batch ops: fall back, keep working
                self.batch_ops = False
        if not self.batch_ops:
            items = list(table.items())
            for key, _ in items:
                del table[key]
        edges = [(self._key(k), self._val(v)) for k, v in items]
        # The batch buffers are sized for a full map (MBs); hand them back now.
        del items
        _return_freed_memory()
        return edges

    @staticmethod
    def _key(k: Any) -> dict[str, Any]:
        return {"cgroup": int(k.cgroup), "tgid": int(k.tgid), "port": int(k.port),
                "family": int(k.family), "role": int(k.role),
                "laddr": bytes(k.laddr), "raddr": bytes(k.raddr)}

    @staticmethod
    def _val(per_cpu: Any) -> dict[str, Any]:
        """One edge's per-CPU values, summed (the max of maxima, the widest span of
        opening times: `*_open_ns` are CLOCK_MONOTONIC, 0 when no connection counted)."""
        out: dict[str, Any] = {name: sum(int(getattr(v, name)) for v in per_cpu)
                               for name in EDGE_FIELDS}
        out["rtt_max_us"] = max(int(v.rtt_max_us) for v in per_cpu)
        opened = [int(v.first_open_ns) for v in per_cpu if v.first_open_ns]
        out["first_open_ns"] = min(opened, default=0)
        out["last_open_ns"] = max(int(v.last_open_ns) for v in per_cpu)
        comms = (bytes(v.comm).split(b"\0", 1)[0] for v in per_cpu)
        out["comm"] = next((c for c in comms if c), b"").decode(errors="replace")
        return out

    def counters(self) -> dict[str, int]:
        table = self._prog["counters"]
        return {name: int(sum(table[table.Key(i)])) for i, name in enumerate(COUNTER_NAMES)}

    def map_usage(self) -> dict[str, tuple[int, int]]:
        """name -> (entries, capacity); counting entries walks the map, so call rarely."""
        usage = {}
        for name in ("conns", "edges0", "edges1", "cgroup_verdicts"):
            table = self._prog[name]
            usage[name] = (sum(1 for _ in table), int(table.max_entries))
        return usage

    def close(self) -> None:
        self._prog.cleanup()


_DNS_MAX = 512  # as in bpf/dns_answers.c
_BPF_CGROUP_INET_INGRESS = 0  # enum bpf_attach_type


def link_cgroup_ingress(prog_fd: int, cgroup_dir: str) -> tuple[int, int]:
    """A loaded cgroup_skb program on `cgroup_dir`'s ingress, through a BPF link (not
    BPF_PROG_ATTACH): it goes with the last fd, so a killed process leaves nothing
    attached. Returns (cgroup fd, link fd); closing both detaches."""
    cgroup_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    libbpf.bpf_link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                       ctypes.c_void_p]
    link = libbpf.bpf_link_create(prog_fd, cgroup_fd, _BPF_CGROUP_INET_INGRESS, None)
    if link < 0:
        os.close(cgroup_fd)
        raise BpfUnavailable(f"cannot attach to {cgroup_dir}: {os.strerror(-link)}")
    return cgroup_fd, link


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
            _return_freed_memory()
            _page_out_compiler()  # as after the connection program's compile (~45 MB)
            fn = self._prog.load_func("dns_ingress", bcc.BPF.CGROUP_SKB)
            self._cgroup_fd, self._link_fd = link_cgroup_ingress(fn.fd, cgroup_dir)
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
        for fd in (self._link_fd, self._cgroup_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._link_fd = self._cgroup_fd = -1
        if self._prog is not None:
            self._prog.cleanup()
