"""One real node per machine at a time (its node IP, bridge, /kubepods and KUBE-*
chains are machine-wide): `exclusive_node()` takes the machine's lock, clears what a
killed run left, brings the node up and takes it down again. Used by the real-node
tier's fixture and by `make demo DEMO_ARGS=--real-node`."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from harness.node import NodeControlPlane, RealNode
from harness.node_host import cleanup_stale
from harness.procs import STATE_DIR, claim_run


class NodeBusy(Exception):
    """Another run holds this machine's real node."""


@contextlib.contextmanager
def exclusive_node(workdir: Path) -> Iterator[RealNode]:
    # A live run (the demo too): another run starting now must not reap our processes.
    claim_run()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    lock = os.open(STATE_DIR / "real-node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeBusy("another run has a real node up on this machine") from None
        cleanup_stale()  # holding the lock makes a killed run's leftovers ours
        node = RealNode(NodeControlPlane(workdir / "node-cp"), workdir / "node")
        started = time.monotonic()
        try:
            node.start()
            node.timings["start_total"] = round(time.monotonic() - started, 2)
            yield node
        finally:
            node.stop()
    finally:
        os.close(lock)
