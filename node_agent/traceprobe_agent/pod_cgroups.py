"""Which pod a cgroup path belongs to, from the kubelet's naming (pure).

Local sides are attributed by cgroup, not IP, so hostNetwork pods (which share
the node's IP) are still told apart. The kubelet names pod cgroups
`pod<uid>` (cgroupfs driver: `/kubepods/burstable/pod1234-…/<container>`) or
`kubepods-…-pod<uid with underscores>.slice` (systemd driver).
"""

from __future__ import annotations

import re

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD = re.compile(rf"(?:^|/|-)pod({_UID})(?:\.slice)?(?:/|$)")


def pod_uid(cgroup_path: str | None) -> str | None:
    """The pod UID in a cgroup path (the innermost pod<uid> component), or None."""
    if not cgroup_path:
        return None
    found = _POD.findall(cgroup_path)
    return found[-1].replace("_", "-") if found else None


def under(cgroup_path: str | None, root: str) -> bool:
    """Is the path inside the subtree `root` (a node's subtree in tests)?"""
    if not cgroup_path:
        return False
    root = root.rstrip("/")
    return cgroup_path == root or cgroup_path.startswith(root + "/")
