"""`make demo` as a user runs it (briefly): the shop's six calls are drawn and a
demo that ran fine exits 0; one that misses an edge names it and exits 1."""

from __future__ import annotations

import subprocess
import sys

from harness.tools import REPO


def test_demo_draws_the_shop_and_exits_zero(bpf_ready: None) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--seconds", "40"],
        cwd=REPO, capture_output=True, text=True, timeout=420)
    out = result.stdout + result.stderr
    assert "missing from the map" not in out, out[-3000:]
    assert result.returncode == 0, out[-3000:]
    assert "[demo] live:" in out and "removed everything the demo made" in out
