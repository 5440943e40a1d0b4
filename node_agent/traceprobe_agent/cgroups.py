"""cgroup v2 id -> path, for naming local processes in standalone mode.

bpf_get_current_cgroup_id() returns the inode number of the cgroup directory,
so a walk of the cgroup2 mount maps ids back to paths; misses trigger one
re-walk (new pods), at most once per interval.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def cgroup2_mount() -> Path | None:
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    except OSError:
        pass
    return None


class CgroupNames:
    def __init__(self, root: Path | None = None, min_rescan_seconds: float = 1.0) -> None:
        self.root = root or cgroup2_mount()
        self._ids: dict[int, str] = {}
        self._last_scan = 0.0
        self._min_rescan = min_rescan_seconds

    def _scan(self) -> None:
        self._last_scan = time.monotonic()
        if self.root is None:
            return
        ids: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            try:
                ids[os.stat(dirpath).st_ino] = "/" if rel == "." else "/" + rel
            except OSError:
                continue  # removed while walking
        self._ids = ids

    def path(self, cgroup_id: int) -> str | None:
        if cgroup_id not in self._ids and time.monotonic() - self._last_scan > self._min_rescan:
            self._scan()
        return self._ids.get(cgroup_id)
