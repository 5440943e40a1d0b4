"""Where BCC finds a kernel header tree to compile against.

Pure lookup, no bcc import: the loader and the agent's status report both ask
this module, so a node without headers is reported instead of crashing.
Order: ``BCC_KERNEL_SOURCE`` (an explicit choice wins), then the running kernel's
own ``/lib/modules/$(uname -r)/{build,source}``, then ``/sys/kernel/kheaders.tar.xz``
(unpacked before use); docs/design.md ("Kernel headers") says why headers of
another kernel version still serve.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KERNEL_SOURCE_ENV = "BCC_KERNEL_SOURCE"
KHEADERS_ARCHIVE = Path("/sys/kernel/kheaders.tar.xz")


@dataclass(frozen=True)
class HeaderSource:
    """A header tree BCC can use, and how it was found (for status reports)."""

    path: Path
    origin: str  # "env", "modules-build", "modules-source" or "kheaders"


def _has_headers(tree: Path) -> bool:
    return (tree / "include" / "linux").is_dir() or (tree / "include" / "generated").is_dir()


def find_kernel_headers(
    release: str | None = None,
    environ: dict[str, str] | None = None,
    modules_root: Path = Path("/lib/modules"),
    kheaders: Path = KHEADERS_ARCHIVE,
) -> HeaderSource | None:
    """Return the first usable header tree in the order above, or None if there is none."""
    env = os.environ if environ is None else environ
    explicit = env.get(KERNEL_SOURCE_ENV)
    if explicit and _has_headers(Path(explicit)):
        return HeaderSource(Path(explicit), "env")
    rel = release or os.uname().release
    for name in ("build", "source"):
        tree = modules_root / rel / name
        if _has_headers(tree):
            return HeaderSource(tree.resolve(), f"modules-{name}")
    if kheaders.exists():
        return HeaderSource(kheaders, "kheaders")
    return None
