"""Fixtures wiring the test world (tests/harness) into pytest.

Tiers follow folders: tests/unit, tests/bpf, tests/cluster, tests/e2e and
tests/node (a real kubelet, containerd and runc). Under CI=true a skipped test is
a failure: there a missing prerequisite is a bug.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import pods as pods_mod
from harness import procs
from harness import services as services_mod
from harness.prereq import in_ci, missing, require_root

TIERS = ("unit", "bpf", "cluster", "e2e", "node")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"CI=true forbids skipping: {reason}"


@pytest.fixture(scope="session")
def world_dir() -> Iterator[Path]:
    """Scratch space on tmpfs when possible (etcd and logs are write-heavy)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="traceprobe-world-", dir=base))
    yield path
    if os.environ.get("TRACEPROBE_KEEP_WORLD"):
        print(f"\nkept test world in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def _reaped() -> None:
    """Once per run: clear what a killed earlier run left (processes, netns, chains),
    unless another run is live right now."""
    alone = procs.claim_run()
    if alone and os.geteuid() == 0:
        procs.reap_stale_processes()
        pods_mod.cleanup_stale()
        if shutil.which("iptables"):
            services_mod.cleanup_stale()


def _running(part: Any) -> Iterator[Any]:
    """Start a test-world part, stop it afterwards, also when starting fails."""
    from harness.tools import ToolMissing

    try:
        part.start()
    except ToolMissing as exc:
        part.stop()
        missing(str(exc))
    except BaseException:
        part.stop()
        raise
    yield part
    part.stop()


_shared_cp: list[Any] = []  # the session's control plane, once a test started it


@pytest.fixture(scope="session")
def control_plane(world_dir: Path, _reaped: None) -> Iterator[Any]:
    from harness.controlplane import ControlPlane

    for cp in _running(ControlPlane(world_dir / "controlplane")):
        _shared_cp.append(cp)
        yield cp
        _shared_cp.clear()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a module's last test, its probes go: modules share one API server."""
    if _shared_cp and (nextitem is None or nextitem.path != item.path):
        from harness.install import reset_probes

        reset_probes(_shared_cp[0])


@pytest.fixture(scope="session")
def collector(world_dir: Path, _reaped: None) -> Iterator[Any]:
    from harness.collector import Collector

    yield from _running(Collector(world_dir / "collector"))


@pytest.fixture
def pod_factory(control_plane: Any) -> Iterator[Any]:
    require_root("network-namespace pods")
    factory = pods_mod.PodFactory(control_plane.api_client())
    yield factory
    factory.cleanup()


@pytest.fixture
def service_factory(control_plane: Any, pod_factory: Any) -> Iterator[Any]:
    if not shutil.which("iptables"):
        missing("iptables not installed (make setup installs it)")
    factory = services_mod.ServiceFactory(control_plane.api_client())
    yield factory
    factory.cleanup()


@pytest.fixture(scope="session")
def bpf_ready(_reaped: None) -> None:
    """BPF can load programs here, or the test is skipped (failed under CI)."""
    from harness.bpf import state_change_counter
    from traceprobe_agent.bcc_runtime import BpfUnavailable

    require_root("loading BPF programs")
    try:  # loading runs the agent's preflight: its message names what is missing
        with state_change_counter():
            pass
    except BpfUnavailable as exc:
        missing(str(exc))
    except Exception as exc:
        missing(f"a trivial tracepoint program did not load: {exc}")
