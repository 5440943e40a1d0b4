"""Kernel plumbing around loaded programs that needs no ``bcc``: BPF links to cgroup
v2 directories (libbpf), the verdict map's writer, and handing the compiler's
memory back after a compile.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
from pathlib import Path
from typing import Any


class BpfUnavailable(RuntimeError):
    """BPF cannot be used here; the message names what is missing and the fix."""


class CgroupAttach(enum.IntEnum):
    """enum bpf_attach_type, the cgroup v2 hooks the agent links programs to."""

    INET_INGRESS = 0
    INET_EGRESS = 1
    INET_SOCK_CREATE = 2
    SOCK_OPS = 3
    UDP4_SENDMSG = 14
    UDP6_SENDMSG = 15


def link_cgroup(prog_fd: int, cgroup_dir: str,
                attach: CgroupAttach = CgroupAttach.INET_INGRESS) -> tuple[int, int]:
    """A loaded program on `cgroup_dir`'s hook `attach`, through a BPF link (not
    BPF_PROG_ATTACH): it goes with the last fd, so a killed process leaves nothing
    attached. Returns (cgroup fd, link fd); closing both detaches."""
    cgroup_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    libbpf.bpf_link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                       ctypes.c_void_p]
    link = libbpf.bpf_link_create(prog_fd, cgroup_fd, int(attach), None)
    if link < 0:
        os.close(cgroup_fd)
        raise BpfUnavailable(f"cannot link {attach.name.lower()} to {cgroup_dir}: "
                             f"{os.strerror(-link)}")
    return cgroup_fd, link


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


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


_MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages now (clean file pages just drop)
_COMPILER_LIBS = ("libLLVM", "libclang")


def page_out_compiler() -> int:
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


def return_freed_memory() -> None:
    """Clang/LLVM free tens of MB after a compile; glibc keeps them unless asked."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
