"""cgroup v2 id -> path, for naming local processes.

bpf_get_current_cgroup_id() returns the inode number of the cgroup directory.
Records are named when the agent flushes, seconds after the connection, and by
then a short-lived container's cgroup (a Job running for 0.3 s) is gone: a walk
of the tree at flush time cannot see it. So one thread learns cgroups as they
are created, from inotify watches on every directory of the cgroup2 tree, and
removed cgroups keep answering for a grace period (late records of a deleted
container keep their name).

Without inotify (watch limit reached, no permission) a miss triggers a re-walk,
at most once per `min_rescan_seconds`; that stays as a safety net either way.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from inotify_simple import INotify, flags

log = logging.getLogger(__name__)

# Directories only: each cgroup holds dozens of interface files, whose events
# are of no interest and which the kernel creates itself anyway.
WATCH_MASK = flags.CREATE | flags.DELETE | flags.ONLYDIR
POLL_SECONDS = 5.0  # close() wakes the watcher at once; the timeout is a backstop


def cgroup2_mount() -> Path | None:
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    except OSError:
        pass
    return None


def _child(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


def _sysctl(name: str) -> str:
    try:
        return Path("/proc/sys/fs/inotify", name).read_text().strip()
    except OSError:
        return "?"


def _fix_for(exc: OSError) -> str:
    """What an operator can do about `exc` from inotify_init1/inotify_add_watch."""
    if exc.errno == errno.ENOSPC:
        return (f"inotify watch limit reached (fs.inotify.max_user_watches="
                f"{_sysctl('max_user_watches')}): raise fs.inotify.max_user_watches")
    if exc.errno == errno.EMFILE:
        return (f"inotify instance limit reached (fs.inotify.max_user_instances="
                f"{_sysctl('max_user_instances')}) or out of file descriptors: raise "
                "fs.inotify.max_user_instances or the agent's open-files limit")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"no permission to watch the cgroup2 tree ({exc.strerror}): give the agent "
                "read access to it (root, or CAP_DAC_READ_SEARCH)")
    return f"inotify failed: {exc}"


class CgroupNames:
    def __init__(self, root: Path | None = None, min_rescan_seconds: float = 1.0,
                 keep_removed_seconds: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root or cgroup2_mount()
        self._min_rescan = min_rescan_seconds
        self._keep_removed = keep_removed_seconds
        self._clock = clock
        # One lock for all state, held by the watcher for a whole batch of events
        # and by a miss's re-walk: a walk then never interleaves with the events
        # that follow it, so merging it cannot undo them.
        self._lock = threading.Lock()
        self._ids: dict[int, str] = {}  # live and recently removed cgroups
        self._live: dict[str, int] = {}  # path -> id of cgroups not yet seen removed
        self._removed: dict[int, float] = {}  # id -> when seen removed, oldest first
        self._last_scan = -float("inf")
        self._inotify: Any = None  # inotify_simple.INotify while watching
        self._wd_path: dict[int, str] = {}
        self._watches: dict[str, int] = {}  # path -> watch descriptor
        self._warned = False
        self._stop = threading.Event()
        self._wake = -1  # an eventfd: close() interrupts the watcher's wait
        self._thread: threading.Thread | None = None
        if self.root is not None:
            self._start()

    # -- lookups ------------------------------------------------------------

    def path(self, cgroup_id: int) -> str | None:
        with self._lock:
            now = self._clock()
            self._expire(now)
            found = self._ids.get(cgroup_id)
            if found is None and now - self._last_scan > self._min_rescan:
                self._scan(now)
                found = self._ids.get(cgroup_id)
            return found

    def live(self) -> dict[int, str]:
        """id -> path of every cgroup seen and not seen removed (a copy)."""
        with self._lock:
            if self._inotify is None and self._clock() - self._last_scan > self._min_rescan:
                self._scan(self._clock())  # not watching: only a walk tells
            return {cgroup_id: path for path, cgroup_id in self._live.items()}

    def close(self) -> None:
        """Stop watching; lookups keep working by re-walking on a miss."""
        self._stop.set()
        if self._thread is not None:
            os.eventfd_write(self._wake, 1)
            self._thread.join(timeout=2)
            self._thread = None
        with self._lock:  # never under the watcher's feet mid-batch
            self._unwatch_all()
            if self._wake >= 0:
                os.close(self._wake)
                self._wake = -1

    # -- the watcher ----------------------------------------------------------

    def _start(self) -> None:
        try:
            self._inotify = INotify()
        except OSError as exc:
            self._warn(exc)
            return
        with self._lock:
            self._scan(self._clock())
            if "/" not in self._wd_path.values():  # not even the root: nothing to wait for
                self._unwatch_all()
                return
        self._wake = os.eventfd(0, os.EFD_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="cgroup-names", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        inotify = self._inotify
        poller = select.poll()  # not select(): the agent may hold over 1024 descriptors
        poller.register(inotify.fileno(), select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        while not self._stop.is_set():
            try:
                poller.poll(POLL_SECONDS * 1000)
                events = [] if self._stop.is_set() else inotify.read(timeout=0)
            except (OSError, ValueError):  # closed by close() after a slow join
                return
            if events:
                with self._lock:
                    if self._inotify is None:
                        return
                    try:
                        self._handle(events)
                    except Exception:  # a bug here must not leave a silent dead watcher
                        log.exception("cgroup names: watcher failed; re-walking on a miss")
                        self._unwatch_all()
                        return

    def _handle(self, events: Iterable[Any]) -> None:
        now = self._clock()
        overflow = False
        for event in events:
            if event.mask & flags.Q_OVERFLOW:
                overflow = True  # events were lost: only a walk can tell what changed
                continue
            if event.mask & flags.IGNORED:
                gone = self._wd_path.pop(event.wd, None)
                if gone is not None and self._watches.get(gone) == event.wd:
                    del self._watches[gone]
                continue
            parent = self._wd_path.get(event.wd)
            if parent is None or not event.mask & flags.ISDIR:
                continue
            path = _child(parent, event.name)
            if event.mask & flags.CREATE:
                self._learn(self._walk(path, watch=True), now)
            elif event.mask & flags.DELETE:
                self._unwatch(self._watches.pop(path, None))
                cgroup_id = self._live.pop(path, None)
                if cgroup_id is not None:
                    self._mark_removed(cgroup_id, now)
        if overflow:
            self._scan(now)
        self._expire(now)

    def _watch(self, full: str, path: str) -> None:
        try:
            wd: int = self._inotify.add_watch(full, WATCH_MASK)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # not merely gone again
                self._warn(exc)
            return
        self._wd_path[wd] = path
        self._watches[path] = wd

    def _unwatch(self, wd: int | None) -> None:
        # The kernel keeps a watch on a removed cgroup directory (and pins its
        # inode) until it is removed by hand: without this, every short-lived
        # container would use up one of fs.inotify.max_user_watches for good.
        if wd is None or self._inotify is None:
            return
        self._wd_path.pop(wd, None)
        with contextlib.suppress(OSError):  # already gone
            self._inotify.rm_watch(wd)

    def _unwatch_all(self) -> None:
        if self._inotify is not None:
            self._inotify.close()  # drops every watch with it
            self._inotify = None
        self._wd_path.clear()
        self._watches.clear()

    def _warn(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("cgroup names: %s; cgroups created and removed between flushes "
                        "(short-lived pods) may go unnamed; falling back to re-walking "
                        "%s on a miss", _fix_for(exc), self.root)

    # -- walking and merging -------------------------------------------------

    def _walk(self, top: str, watch: bool) -> dict[int, str]:
        """id -> path of `top` and everything below it. With `watch`, each
        directory is watched before it is listed: a child created meanwhile
        raises an event instead of slipping between listing and watching."""
        assert self.root is not None
        found: dict[int, str] = {}
        pending = [top]
        while pending:
            path = pending.pop()
            full = os.path.join(self.root, path.lstrip("/"))
            if watch and self._inotify is not None:
                self._watch(full, path)
            try:
                found[os.stat(full).st_ino] = path
                with os.scandir(full) as entries:
                    pending.extend(_child(path, e.name) for e in entries
                                   if e.is_dir(follow_symlinks=False))
            except OSError:
                continue  # removed while walking
        return found

    def _learn(self, found: dict[int, str], now: float) -> None:
        for cgroup_id, path in found.items():
            before = self._live.get(path)
            if before is not None and before != cgroup_id:  # its removal went unseen
                self._mark_removed(before, now)
            self._ids[cgroup_id] = path
            self._live[path] = cgroup_id
            self._removed.pop(cgroup_id, None)

    def _scan(self, now: float) -> None:
        """Walk the whole tree and merge it: cgroups it no longer finds start
        their grace period, those already in it keep theirs."""
        self._last_scan = now
        if self.root is None:
            return
        old = dict(self._watches)
        self._wd_path.clear()  # re-adding a watch returns its old descriptor
        self._watches.clear()
        found = self._walk("/", watch=True)
        for wd in set(old.values()) - set(self._wd_path):  # directories since removed
            self._unwatch(wd)
        for path, cgroup_id in list(self._live.items()):
            if found.get(cgroup_id) != path:
                del self._live[path]
                if cgroup_id not in found:
                    self._mark_removed(cgroup_id, now)
        self._learn(found, now)
        self._expire(now)

    def _mark_removed(self, cgroup_id: int, now: float) -> None:
        self._removed.pop(cgroup_id, None)  # keeps the dict in order of removal
        self._removed[cgroup_id] = now

    def _expire(self, now: float) -> None:
        while self._removed:
            cgroup_id, since = next(iter(self._removed.items()))
            if now - since < self._keep_removed:
                return
            del self._removed[cgroup_id]
            self._ids.pop(cgroup_id, None)
