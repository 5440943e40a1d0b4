"""Compile the C workload generator at run time, into a cache outside the repository."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("loadgen.c")
BINARY_NAME = "tpb-loadgen"  # also its comm, so it is recognisable in ps and tcplife
CFLAGS = ["-O2", "-Wall", "-Wextra", "-pthread"]


def cache_dir() -> Path:
    """`$TRACEPROBE_CACHE/bench` (default /var/cache/traceprobe/bench), as `make setup` uses."""
    return Path(os.environ.get("TRACEPROBE_CACHE", "/var/cache/traceprobe")) / "bench"


def build_loadgen(cc: str = "gcc") -> Path:
    """Path of the compiled generator; rebuilt only when the source or flags change."""
    compiler = shutil.which(cc)
    if compiler is None:
        raise RuntimeError(f"no C compiler '{cc}' on PATH: apt-get install gcc")
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:12]
    target = cache_dir() / f"loadgen-{digest}" / BINARY_NAME
    if target.is_file() and os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / BINARY_NAME
        result = subprocess.run([compiler, *CFLAGS, "-o", str(out), str(SOURCE)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{result.stderr}")
        out.replace(target)  # atomic: a concurrent run sees the old binary or the new
    return target
