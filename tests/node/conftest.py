"""The real-node tier: one real node (tests/harness/node.py) per test run, shared by
its modules; each module cleans up what it created in its own namespaces."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.node import NodeControlPlane, RealNode
from harness.node_host import cleanup_stale
from harness.prereq import missing, require_root
from harness.procs import STATE_DIR
from harness.tools import ToolMissing


@pytest.fixture(scope="session")
def real_node(world_dir: Path, _reaped: None) -> Iterator[RealNode]:
    require_root("a real kubelet and container runtime")
    # One real node per machine (node IP, bridge, /kubepods, KUBE-* chains are
    # machine-wide): holding this lock also makes a killed run's leftovers ours.
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    lock = os.open(STATE_DIR / "real-node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        missing("another test run has a real node up on this machine")
    try:
        cleanup_stale()
        node = RealNode(NodeControlPlane(world_dir / "node-cp"), world_dir / "node")
        started = time.monotonic()
        try:
            node.start()
        except ToolMissing as exc:
            node.stop()
            missing(str(exc))
        except BaseException:
            node.stop()
            raise
        node.timings["start_total"] = round(time.monotonic() - started, 2)
        print(f"\nreal node up: {json.dumps(node.timings)}")
        yield node
        node.stop()
    finally:
        os.close(lock)


