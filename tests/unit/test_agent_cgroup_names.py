"""CgroupNames against the real cgroup2 tree: cgroups that come and go between two
flushes of the agent keep their names (inotify), removed ones for a grace period."""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import inotify_simple
import pytest

from harness.prereq import missing, require_root
from harness.waiting import wait_until
from traceprobe_agent.cgroups import CgroupNames, cgroup2_mount


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tree() -> Iterator[tuple[Path, str]]:
    """(cgroup2 mount, this test's own cgroup under it, as CgroupNames names it)."""
    require_root("creating cgroups under the cgroup2 mount")
    root = cgroup2_mount()
    if root is None:
        missing("no cgroup2 hierarchy mounted (/proc/mounts has no cgroup2 line)")
    name = f"/traceprobe-test-cgnames-{os.getpid()}"
    top = root / name.lstrip("/")
    top.mkdir()
    try:
        yield root, name
    finally:
        for dirpath, _dirs, _files in os.walk(top, topdown=False):  # children first
            os.rmdir(dirpath)


@pytest.fixture
def names_of() -> Iterator[list[CgroupNames]]:
    made: list[CgroupNames] = []
    yield made
    for names in made:
        names.close()


def _watching(names: CgroupNames) -> bool:
    return names._thread is not None and names._thread.is_alive()


def _mkdir(root: Path, path: str) -> int:
    full = root / path.lstrip("/")
    full.mkdir()
    return full.stat().st_ino


def _rmdir(root: Path, path: str) -> None:
    (root / path.lstrip("/")).rmdir()


def test_a_cgroup_gone_before_the_flush_is_still_named(tree, names_of) -> None:
    root, top = tree
    names = CgroupNames(root)
    names_of.append(names)
    assert _watching(names), "no inotify watcher started"
    job = f"{top}/job"
    inode = _mkdir(root, job)
    time.sleep(0.02)  # a container that ran for a moment
    _rmdir(root, job)
    assert not (root / job.lstrip("/")).exists()
    assert wait_until(lambda: names.path(inode), timeout=2, interval=0.05,
                      what="the removed cgroup's name") == job


def test_a_pod_and_its_container_created_back_to_back(tree, names_of) -> None:
    root, top = tree
    names = CgroupNames(root)
    names_of.append(names)
    pod, container = f"{top}/pod1234", f"{top}/pod1234/c0ffee"
    pod_id = _mkdir(root, pod)
    container_id = _mkdir(root, container)  # no pause: the way runc does it
    time.sleep(0.02)
    _rmdir(root, container)
    _rmdir(root, pod)
    assert wait_until(lambda: names.path(container_id), timeout=2, interval=0.05,
                      what="the container's name") == container
    assert names.path(pod_id) == pod


def test_a_removed_cgroup_is_forgotten_after_the_grace_period(tree, names_of) -> None:
    root, top = tree
    clock = Clock()
    names = CgroupNames(root, keep_removed_seconds=30, clock=clock)
    names_of.append(names)
    gone = f"{top}/gone"
    inode = _mkdir(root, gone)
    wait_until(lambda: names.path(inode), timeout=2, interval=0.05, what="the new cgroup")
    _rmdir(root, gone)
    wait_until(lambda: inode in names._removed, timeout=2, interval=0.05,
               what="the watcher to see the removal")
    clock.now += 29
    assert names.path(inode) == gone
    clock.now += 2
    assert names.path(inode) is None
    assert inode not in names._ids and inode not in names._removed  # memory is given back


def test_a_rescan_keeps_removed_cgroups_in_their_grace_period(tree, names_of) -> None:
    root, top = tree
    clock = Clock()
    names = CgroupNames(root, keep_removed_seconds=60, clock=clock)
    names_of.append(names)
    old, new = f"{top}/old", f"{top}/new"
    old_id = _mkdir(root, old)
    wait_until(lambda: names.path(old_id), timeout=2, interval=0.05, what="the new cgroup")
    _rmdir(root, old)
    wait_until(lambda: old_id in names._removed, timeout=2, interval=0.05,
               what="the watcher to see the removal")
    names.close()  # the miss below has to be answered by a full re-walk
    new_id = _mkdir(root, new)
    clock.now += 10
    assert names.path(new_id) == new  # a miss: the whole tree was walked again
    assert names.path(old_id) == old
    clock.now += 51
    assert names.path(old_id) is None


def test_a_lost_event_queue_is_made_good_by_a_full_walk(tree, names_of) -> None:
    root, top = tree
    names = CgroupNames(root, min_rescan_seconds=3600)  # no miss may walk the tree
    names_of.append(names)
    before = f"{top}/before"
    before_id = _mkdir(root, before)
    wait_until(lambda: names.path(before_id), timeout=2, interval=0.05, what="the new cgroup")
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    late = f"{top}/late"
    with names._lock:  # the watcher cannot take events: the kernel's queue overflows
        for n in range(limit // 2 + 200):  # two events each
            _mkdir(root, f"{top}/x{n}")
            _rmdir(root, f"{top}/x{n}")
        late_id = _mkdir(root, late)  # its event is lost
        _rmdir(root, before)  # and so is this one's
    assert wait_until(lambda: names.path(late_id), timeout=10, interval=0.05,
                      what="the overflow's walk to find the late cgroup") == late
    assert names.path(before_id) == before and before_id in names._removed  # graced


def _watched_inodes(names: CgroupNames) -> set[int]:
    """Inodes the kernel holds a watch on for this instance (its fdinfo lists one per
    line, `ino:` in hex)."""
    fdinfo = Path(f"/proc/self/fdinfo/{names._inotify.fileno()}").read_text()
    return {int(m.group(1), 16) for m in re.finditer(r"^inotify .*?\bino:([0-9a-f]+)",
                                                     fdinfo, re.MULTILINE)}


def test_removed_cgroups_give_their_watches_back(tree, names_of) -> None:
    root, top = tree
    names = CgroupNames(root)
    names_of.append(names)
    # This test's own cgroups only: the rest of the tree may change meanwhile (a
    # systemd unit or a container elsewhere on the node).
    ours = {_mkdir(root, f"{top}/c{n}") for n in range(20)}
    wait_until(lambda: ours <= _watched_inodes(names), timeout=10, interval=0.05,
               what="a watch on each new cgroup")
    for n in range(20):
        _rmdir(root, f"{top}/c{n}")
    # The kernel does not drop a watch on a removed cgroup by itself: a leak here
    # ends in fs.inotify.max_user_watches on a node that runs many short Jobs.
    wait_until(lambda: not ours & _watched_inodes(names), timeout=10, interval=0.05,
               what="the watches of removed cgroups to be given back")


def test_without_inotify_it_rewalks_and_says_how_to_fix_it(
        tree, names_of, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    root, top = tree

    def no_watches(*_args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(inotify_simple.INotify, "add_watch", no_watches)
    with caplog.at_level(logging.WARNING, logger="traceprobe_agent.cgroups"):
        names = CgroupNames(root, min_rescan_seconds=0)
        names_of.append(names)
        inode = _mkdir(root, f"{top}/late")
        assert names.path(inode) == f"{top}/late"
        assert names.path(inode + 10**12) is None  # another miss, another walk
    assert not _watching(names) and names._inotify is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "max_user_watches" in warnings[0] and "raise" in warnings[0]


def test_close_stops_the_watcher_and_lookups_go_on(tree) -> None:
    root, top = tree
    names = CgroupNames(root, min_rescan_seconds=0)
    thread = names._thread
    assert thread is not None and thread.is_alive()
    names.close()
    assert not thread.is_alive() and names._inotify is None
    inode = _mkdir(root, f"{top}/after")
    assert names.path(inode) == f"{top}/after"
