"""The one module that imports ``bcc`` (an import-linter contract enforces it).

Everything else in the agent talks to the kernel through this thin layer, so
the rest stays testable without root and BCC's Python API has one owner.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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


def tracepoint_exists(category: str, event: str) -> bool:
    """Feature probe: does the running kernel offer this tracepoint?"""
    return bool(_import_bcc().BPF.tracepoint_exists(category, event))


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


@contextmanager
def loaded_program(text: str, cflags: list[str] | None = None) -> Iterator[Any]:
    """Compile and load a BCC program (TRACEPOINT_PROBE blocks attach on load).

    The program is detached and its maps freed when the block exits, also on error.
    """
    preflight()
    bcc = _import_bcc()
    prog = bcc.BPF(text=text.encode(), cflags=cflags or [])
    try:
        yield prog
    finally:
        prog.cleanup()
