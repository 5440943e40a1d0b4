"""What the running kernel offers: tracepoints from tracefs, BTF and lockdown from
sysfs, raw-tracepoint support from bcc (a bpf() capability, no file shows it).

Variants are chosen from these facts, never from the kernel version string.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

#: tracepoint -> the probe kind it serves (a missing one degrades only that kind)
TRACEPOINTS: dict[str, str] = {
    "sock:inet_sock_set_state": "connections",
    "tcp:tcp_destroy_sock": "lifetime",  # optional: late reads after CLOSE still count
    "sock:sock_send_length": "bytes",
    "sock:sock_recv_length": "bytes",
    "tcp:tcp_receive_reset": "failures",
    "tcp:tcp_retransmit_skb": "retransmits",
    "tcp:tcp_probe": "rtt",
}


@dataclass(frozen=True)
class KernelFeatures:
    release: str
    tracepoints: dict[str, bool] = field(default_factory=dict)
    btf: bool = False
    lockdown: str = "unknown"  # none, integrity, confidentiality, unknown
    raw_tracepoints: bool = False
    kprobes: bool = False  # the kprobe PMU or kprobe_events: fallbacks can attach

    def missing_for(self, kind: str) -> list[str]:
        """Tracepoints that kind `kind` needs but the kernel lacks."""
        return sorted(tp for tp, k in TRACEPOINTS.items()
                      if k == kind and not self.tracepoints.get(tp, False))

    def as_report(self) -> dict[str, bool]:
        report = {f"tracepoint:{tp}": ok for tp, ok in self.tracepoints.items()}
        report["btf"] = self.btf
        report["raw_tracepoints"] = self.raw_tracepoints
        report["kprobes"] = self.kprobes
        report[f"lockdown:{self.lockdown}"] = True
        return report


def tracefs_root(roots: tuple[Path, ...] = TRACEFS_ROOTS) -> Path | None:
    return next((r for r in roots if (r / "events").is_dir()), None)


def _lockdown(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError:
        return "unknown"
    # The active mode is bracketed: "none integrity [confidentiality]".
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "unknown"


def _raw_tracepoints_supported() -> bool:
    """Ask BCC (it tries BPF_RAW_TRACEPOINT_OPEN); False where bcc is missing."""
    try:
        from traceprobe_agent.bcc_runtime import raw_tracepoints_supported
    except ImportError:
        return False
    return raw_tracepoints_supported()


def probe_kernel(tracefs: Path | None = None, sysfs: Path = Path("/sys"),
                 release: str | None = None,
                 forced_missing: frozenset[str] = frozenset()) -> KernelFeatures:
    """Probe the kernel; `forced_missing` pretends tracepoints are absent (for tests
    and for operators who want to disable a hook on a misbehaving kernel)."""
    root = tracefs or tracefs_root()
    tracepoints = {}
    for tp in TRACEPOINTS:
        category, event = tp.split(":")
        present = root is not None and (root / "events" / category / event).is_dir()
        tracepoints[tp] = present and tp not in forced_missing
    return KernelFeatures(
        release=release or os.uname().release,
        tracepoints=tracepoints,
        btf=(sysfs / "kernel" / "btf" / "vmlinux").exists(),
        # Raw tracepoints (4.17+) are a bpf() capability, not a tracefs entry.
        raw_tracepoints=_raw_tracepoints_supported(),
        kprobes=(sysfs / "bus" / "event_source" / "devices" / "kprobe").is_dir()
        or (root is not None and (root / "kprobe_events").exists()),
        lockdown=_lockdown(sysfs / "kernel" / "security" / "lockdown"),
    )
