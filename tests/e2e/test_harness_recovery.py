"""A test run killed midway leaves nothing that blocks the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from harness.pods import cgroup2_root, cleanup_stale
from harness.prereq import require_root
from harness.procs import ManagedProcess, reap_stale_processes
from harness.tools import REPO

# What a test run holds when it is killed: a pod netns and a pod process.
VICTIM = """
import sys, subprocess
from harness.pods import PodFactory, cgroup2_root, CGROUP_TREE, ensure_bridge
ensure_bridge()
PodFactory._plumb("tp-killed0", "tphkilled0", "10.244.250.2", "fd00:10:244::fa:2")
cg = cgroup2_root() / CGROUP_TREE / "node-killed" / "pod"
cg.mkdir(parents=True, exist_ok=True)
subprocess.Popen(["ip", "netns", "exec", "tp-killed0", "sleep", "300"],
                 preexec_fn=lambda: (cg / "cgroup.procs").write_text("0"))
print("ready", flush=True)
subprocess.run(["sleep", "300"])
"""


def _netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_cleanup_after_sigkill_removes_netns_links_and_cgroups() -> None:
    require_root("network namespaces")
    cleanup_stale()  # a start as clean as every run's
    victim = subprocess.Popen([sys.executable, "-c", VICTIM], cwd=REPO / "tests",
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO / "tests")})
    assert victim.stdout is not None and victim.stdout.readline().strip() == "ready"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    cg = cgroup2_root() / "traceprobe-test" / "node-killed" / "pod"
    assert "tp-killed0" in _netns() and (cg / "cgroup.procs").read_text().split()

    removed = cleanup_stale()
    assert "netns tp-killed0" in removed
    assert "tp-killed0" not in _netns()
    assert subprocess.run(["ip", "link", "show", "tphkilled0"], capture_output=True).returncode
    assert not cg.exists()


def test_reap_kills_recorded_processes_of_a_dead_run(tmp_path: Path) -> None:
    orphan = ManagedProcess("orphan-apiserver", ["sleep", "300"], tmp_path / "log",
                            state_dir=tmp_path)
    # The run that started it is gone; the next run's reaper finds the record.
    assert reap_stale_processes(tmp_path) == ["orphan-apiserver"]
    assert orphan.popen.wait(5) == -signal.SIGKILL
    assert reap_stale_processes(tmp_path) == []
