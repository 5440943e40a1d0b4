"""The operator killed at bad moments: mid-reconcile (SIGKILL, no goodbye) and
while a probe is deleted. Its replacement finishes the job from the API state."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.install import apply_probe, ensure_node, install
from harness.waiting import wait_until
from harness.world import OperatorWorld


@pytest.fixture
def world(control_plane: Any, tmp_path: Any) -> Iterator[OperatorWorld]:
    install(control_plane)
    ensure_node(control_plane, "tp-recovery-node", {"kubernetes.io/os": "linux",
                                                    "pool": "recovery"})
    w = OperatorWorld(control_plane, tmp_path)
    yield w
    w.stop()
    control_plane.kubectl("delete", "traceprobes", "-n", "recovery", "--all", "--wait=false",
                          check=False)


def _probe(world: OperatorWorld, name: str) -> Any:
    return world.probe(name, namespace="recovery")


def test_sigkill_mid_reconcile_then_restart_finishes(world: OperatorWorld) -> None:
    op = world.start_operator("op-killed")
    apply_probe(world.cp, "half", "recovery", "{nodeSelector: {pool: recovery}}")
    # Kill as soon as it has started on the probe (finalizer on), before it is done.
    wait_until(lambda: "traceprobe.io/agents-detached" in (
        (_probe(world, "half") or {}).get("metadata", {}).get("finalizers") or []),
        timeout=30, interval=0.05, what="the operator's first write")
    os.killpg(op.pid, signal.SIGKILL)
    op.popen.wait()
    world.start_operator("op-after-kill")
    wait_until(lambda: next((c for c in (_probe(world, "half").get("status") or {}).get(
        "conditions") or [] if c["type"] == "Accepted" and c["status"] == "True"), None),
        timeout=90, what="Accepted after the restart (the dead replica's peering entry "
        "expires first: up to 20 s)")
    assert wait_until(world.daemonset, what="agent DaemonSet after the restart")


def test_probe_deleted_while_operator_down_is_released_on_restart(
        world: OperatorWorld) -> None:
    op = world.start_operator("op-first")
    apply_probe(world.cp, "gone", "recovery", "{nodeSelector: {pool: recovery}}")
    wait_until(lambda: "traceprobe.io/agents-detached" in (
        (_probe(world, "gone") or {}).get("metadata", {}).get("finalizers") or []),
        timeout=30, what="finalizer set")
    op.stop()
    world.cp.kubectl("delete", "traceprobe/gone", "-n", "recovery", "--wait=false")
    held = _probe(world, "gone")
    assert held and held["metadata"].get("deletionTimestamp"), "held by the finalizer"
    world.start_operator("op-second")  # no agent ever attached on that node: immediate
    wait_until(lambda: _probe(world, "gone") is None, timeout=60,
               what="the restarted operator releases the finalizer")


def _accepted(proc: Any, probe: str) -> bool:
    return f"[shop/{probe}] Handler 'accept' succeeded" in proc.log.read_text()


def test_standby_takes_over_with_indexes_of_what_changed_while_it_stood_by(
        world: OperatorWorld) -> None:
    """A later replica stands by (no newcomer freezes the senior one, whose indexes
    would stop following the cluster); when the senior hangs, the standby takes
    over with Node and NodeReport indexes that hold what changed meanwhile."""
    ensure_node(world.cp, "tp-takeover-a", {"pool": "takeover"})
    senior = world.start_operator("op-senior")
    apply_probe(world.cp, "takeover", "shop", "{nodeSelector: {pool: takeover}}")
    wait_until(lambda: world.condition("takeover", "Ready").get("reason") == "NodesPending",
               what="the senior replica reports on the probe")
    junior = world.start_operator("op-junior")
    time.sleep(5)  # peering: each replica has seen the other's entry
    apply_probe(world.cp, "after-junior", "shop", "{nodeSelector: {pool: takeover}}")
    wait_until(lambda: _accepted(senior, "after-junior"), what="the senior stays active")
    assert not _accepted(junior, "after-junior")

    os.killpg(senior.pid, signal.SIGSTOP)  # hung: it neither watches nor says goodbye
    try:
        ensure_node(world.cp, "tp-takeover-b", {"pool": "takeover"})
        world.report("tp-takeover-a", "takeover", "Attached")
        world.report("tp-takeover-b", "takeover", "Attached")
        ready = wait_until(lambda: world.condition("takeover", "Ready").get("status") == "True"
                           and world.condition("takeover", "Ready"), timeout=60,
                           what="the standby takes over (after the senior's peering entry "
                           "expires: up to 20 s) and sees both nodes and both reports")
        assert ready["message"] == "2/2 nodes ready"
    finally:
        os.killpg(senior.pid, signal.SIGKILL)
        senior.popen.wait()
