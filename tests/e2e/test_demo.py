"""`make demo` as a user runs it (briefly), simulated and on a real node: the shop's
calls are drawn and a demo that ran fine exits 0; one that misses an edge names it and
exits 1."""

from __future__ import annotations

import re
import subprocess
import sys

from harness.prereq import missing, require_root
from harness.tools import REPO


def test_demo_draws_the_shop_and_exits_zero(bpf_ready: None) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--seconds", "40"],
        cwd=REPO, capture_output=True, text=True, timeout=420)
    out = result.stdout + result.stderr
    assert "missing from the map" not in out, out[-3000:]
    assert result.returncode == 0, out[-3000:]
    assert "[demo] live:" in out and "removed everything the demo made" in out
    # The cart speaks HTTP: its requests are on the map, one in four a 404 (a round of
    # four in flight when the map was read may lack its 404 yet).
    (line,) = [row for row in out.splitlines() if "requests workload:shop/frontend ->" in row]
    found = re.search(r": (\d+) http, (\d+) errors", line)
    assert found, line
    total, errors = int(found[1]), int(found[2])
    assert total >= 8 and abs(4 * errors - total) <= 3, line


def test_demo_on_a_real_node_installs_with_helm_and_exits_zero(bpf_ready: None) -> None:
    """`make demo DEMO_ARGS=--real-node`: the shop as real pods, the product from
    `helm install`; every call of the shop drawn, everything removed at the end."""
    require_root("a real kubelet and container runtime")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--real-node", "--seconds", "15"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    out = result.stdout + result.stderr
    if "another run has a real node up" in out:
        missing("another run has a real node up on this machine")
    assert "missing from the map" not in out, out[-4000:]
    assert result.returncode == 0, out[-4000:]
    assert "helm install" in out and "first edges" in out, out[-4000:]
    assert "removed everything the demo made" in out
    print("\n" + "\n".join(line for line in out.splitlines() if "first edges" in line))
