"""What a real node changes on this host, and how to undo it: sysctls, iptables
chains, cgroups, mounts, links; `cleanup_stale()` for what a killed run left.
Used by tests/harness/node.py (RealNode.stop) and at the start of each run."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

from harness.procs import STATE_DIR
from harness.tools import REPO, ToolMissing
from harness.waiting import wait_until

NODE_LINK, NODE_PEER = "tpnode0", "tpnode1"  # not "tph*": pods.cleanup_stale owns those
CNI_BRIDGE = "tpcni0"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
_IPT_TABLES = ("filter", "nat", "mangle", "raw")
STALE_MOUNTS = r"/traceprobe-world-[^/]+/node/"  # cleanup_stale(): a killed run's mounts
STATE_FILE = STATE_DIR / "real-node.json"
_CHAIN_PREFIXES = ("KUBE-", "CNI-")


def sh(*argv: str | os.PathLike[str], check: bool = True, timeout: float = 120,
       input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=timeout, input=input_text)
    if check and result.returncode != 0:
        raise RuntimeError(f"{shlex.join(str(a) for a in argv)} failed ({result.returncode}): "
                           f"{result.stderr.strip() or result.stdout.strip()}")
    return result


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def _link_exists(name: str) -> bool:
    return sh("ip", "link", "show", name, check=False).returncode == 0


def _chains(cmd: str, table: str) -> set[str]:
    out = sh(f"{cmd}-save", "-t", table, check=False).stdout
    return {line[1:].split()[0] for line in out.splitlines() if line.startswith(":")}


def remove_chains(cmd: str, keep: dict[str, set[str]]) -> list[str]:
    """Delete KUBE-*/CNI-* chains (and the rules jumping to them) not in `keep`."""
    removed = []
    for table in _IPT_TABLES:
        saved = sh(f"{cmd}-save", "-t", table, check=False).stdout
        ours = {c for c in _chains(cmd, table)
                if c.startswith(_CHAIN_PREFIXES) and c not in keep.get(table, set())}
        if not ours:
            continue
        for line in saved.splitlines():
            if not line.startswith("-A "):
                continue
            words = shlex.split(line)
            chain = words[1]
            target = words[words.index("-j") + 1] if "-j" in words else None
            if chain not in ours and target in ours:
                sh(cmd, "-w", "-t", table, "-D", *words[1:], check=False)
        for chain in ours:
            sh(cmd, "-w", "-t", table, "-F", chain, check=False)
        for chain in ours:
            if sh(cmd, "-w", "-t", table, "-X", chain, check=False).returncode == 0:
                removed.append(f"{cmd} {table} {chain}")
    return removed


def _cgroup_mounts() -> list[Path]:
    """Every cgroup hierarchy's mount point (v1 controllers and the v2 one)."""
    roots = []
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if parts[2] in ("cgroup", "cgroup2"):
            roots.append(Path(parts[1]))
    return roots


def _kill_and_remove_cgroup(path: Path) -> None:
    if not path.is_dir():
        return
    subdirs = (p for p in path.rglob("*") if p.is_dir())
    dirs = [*sorted(subdirs, key=lambda p: len(p.parts), reverse=True), path]
    for sub in dirs:
        procs = sub / "cgroup.procs"
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    for sub in dirs:
        procs = sub / "cgroup.procs"
        with contextlib.suppress(AssertionError):
            wait_until(functools.partial(_no_procs, procs), 10, f"cgroup {sub} empty")
        with contextlib.suppress(OSError):
            sub.rmdir()


def _no_procs(procs: Path) -> bool:
    return not procs.exists() or not procs.read_text().split()


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt.startswith(prefix) or mnt == str(root):
            found.append(mnt)
    return found


def unmount_all(root: Path) -> None:
    """Unmount everything at or below `root`, deepest first (lazily if busy)."""
    for _ in range(5):
        mounts = sorted(set(_mounts_under(root)), key=lambda m: m.count("/"), reverse=True)
        if not mounts:
            return
        for mnt in mounts:
            if sh("umount", mnt, check=False).returncode != 0:
                sh("umount", "-l", mnt, check=False)
    left = _mounts_under(root)
    if left:
        raise RuntimeError(f"still mounted under {root}: {left}")


def restore_sysctls(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None or _read_sysctl(name) == value:
            continue
        if name == "net/ipv4/ip_forward" and _link_exists("tpbr0"):
            continue  # the simulated tier's bridge is up: its pods need forwarding
        with contextlib.suppress(OSError):
            Path("/proc/sys", name).write_text(value)


def cleanup_stale() -> list[str]:
    """What a killed real-node run left (its processes are reaped by procs):
    mounts under traceprobe-world-*/node/ (the tests' RealNode workdir), shims,
    the node IP link, the CNI bridge, /kubepods cgroups, KUBE-*/CNI-* chains.
    Call it only when no other run is live."""
    removed: list[str] = []
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    stale_dirs: set[Path] = set()
    for mnt in sorted((m for m in mounts if re.search(STALE_MOUNTS, m)), key=len, reverse=True):
        if sh("umount", "-l", mnt, check=False).returncode == 0:
            removed.append(f"mount {mnt}")
            match = re.search(STALE_MOUNTS, mnt)
            assert match is not None
            stale_dirs.add(Path(mnt[:match.end()]))
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and any(
                    b"/traceprobe-world-" in a for a in argv):
                os.kill(int(proc.name), signal.SIGKILL)
                removed.append(f"shim {proc.name}")
    for link in (CNI_BRIDGE, NODE_LINK):
        if _link_exists(link):
            sh("ip", "link", "del", link, check=False)
            removed.append(f"link {link}")
    for root in _cgroup_mounts():
        if (root / "kubepods").is_dir():
            _kill_and_remove_cgroup(root / "kubepods")
            removed.append(f"cgroup {root / 'kubepods'}")
    for cmd in ("iptables", "ip6tables"):
        if shutil.which(cmd):
            removed += remove_chains(cmd, {})
    for node_dir in stale_dirs:  # a killed run's images and pod data, on tmpfs
        if not _mounts_under(node_dir):
            shutil.rmtree(node_dir, ignore_errors=True)
            removed.append(f"dir {node_dir}")
    if STATE_FILE.exists():  # what the killed run had found before it started
        with contextlib.suppress(ValueError, OSError):
            found = json.loads(STATE_FILE.read_text())
            restore_sysctls(found.get("sysctls", {}))
            removed.append("sysctls restored")
            for d in map(Path, found.get("new_host_dirs", [])):
                if d.exists():
                    unmount_all(d)
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(f"dir {d}")
        STATE_FILE.unlink(missing_ok=True)
    return removed


def node_images() -> dict[str, tuple[str, Path]]:
    """key -> (image reference, OCI/Docker archive) from scripts/node/build-images.sh."""
    script = REPO / "scripts" / "node" / "build-images.sh"
    out = subprocess.run([str(script), "--print-paths"], capture_output=True, text=True,
                         check=True).stdout
    images: dict[str, tuple[str, Path]] = {}
    for line in out.splitlines():
        key, ref, path = line.split()
        if not Path(path).is_file():
            raise ToolMissing(f"image {ref} not built at {path}: run scripts/node/build-images.sh")
        images[key] = (ref, Path(path))
    return images


def host_prerequisites() -> list[str]:
    """What this machine lacks for a real node (empty when all is there)."""
    lacking = [f"{cmd} (scripts/node/install-packages.sh)"
               for cmd in ("containerd", "containerd-shim-runc-v2", "runc", "ctr",
                           "iptables", "ip6tables", "ip")
               if shutil.which(cmd) is None]
    lacking += [f"CNI plugin {CNI_BIN_DIR / p} (containernetworking-plugins)"
                for p in ("bridge", "host-local", "loopback", "portmap")
                if not (CNI_BIN_DIR / p).exists()]
    if os.geteuid() != 0:
        lacking.append("root")
    return lacking
