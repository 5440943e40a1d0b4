"""benchmarks.all: which benchmarks run with which settings, and the docs page it writes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/: not installed
from benchmarks.all import BENCHES, INTRO, NAMES, plan, render_docs


def test_quick_passes_each_benchmark_its_short_settings() -> None:
    full = plan(False, list(NAMES))
    quick = plan(True, ["map_scale", "apply_to_ready"])
    assert [r.bench.name for r in full] == list(NAMES) and all(not r.argv for r in full)
    assert [(r.bench.name, r.argv) for r in quick] == [
        ("map_scale", ["--quick"]), ("apply_to_ready", ["--quick"])]
    assert all(b.quick for b in BENCHES)


def test_docs_keep_the_intro_the_machine_and_each_output_verbatim() -> None:
    ran, skipped, failed = plan(True, ["agent_overhead", "apply_to_ready", "map_scale"])
    ran.code, ran.seconds, ran.output = 0, 90.0, "  variant  ratio\n  baseline   1.0\n"
    skipped.note = "needs root"
    failed.code, failed.seconds, failed.output = 1, 30.0, "boom\n"
    page = render_docs("Machine\n  nproc 2", [ran, skipped, failed])
    assert page.startswith(INTRO)
    assert "```text\nMachine\n  nproc 2\n```" in page
    assert "`python -m benchmarks.agent_overhead --seconds 2 --repeats 2 " \
           "--bpf-stats-seconds 2 --profile-seconds 2`, 1.5 min\n\n```text\n" \
           "  variant  ratio\n  baseline   1.0\n```" in page
    assert "skipped: needs root" in page
    assert "exited 1" in page and "```text\nboom\n```" in page
    assert page.count("## ") == 4  # three benchmarks and the summary


def test_repeats_go_to_the_agent_overhead_alone() -> None:
    agent, scale = plan(False, ["agent_overhead", "map_scale"], repeats=3)
    assert agent.argv == ["--repeats", "3"] and scale.argv == []
    (quick,) = plan(True, ["agent_overhead"], repeats=2)
    assert quick.argv[-2:] == ["--repeats", "2"]
