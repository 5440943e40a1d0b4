#!/usr/bin/env bash
# One idempotent setup for the demo and the tests: Debian packages, kernel
# headers, tracefs/bpffs, a virtualenv that can import Debian's bcc, the
# package itself, and the Go-built test-world binaries (cached outside the repo).
# Safe to re-run; a warm run takes seconds.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRACEPROBE_VENV:-$REPO/.venv}"
STAMPS="$REPO/.setup-stamps"
SYSTEM_PYTHON=/usr/bin/python3   # Debian's python: python3-bpfcc is built for it
# The last line: real servers, and Debian's clients, for the request tests.
APT_PACKAGES=(python3-bpfcc bpftool iproute2 iptables conntrack linux-headers-amd64
              python3-venv openssl curl procps iputils-ping netcat-openbsd
              postgresql redis-server python3-psycopg2 python3-redis)

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: installing packages, mounting tracefs and loading BPF need it (sudo make setup)"
mkdir -p "$STAMPS"

# 1. Debian packages -----------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "apt: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "apt: all ${#APT_PACKAGES[@]} packages present"
fi

# 2. Kernel headers: BCC needs *a* tree; link Debian's when the running kernel has none.
release="$(uname -r)"
modules="/lib/modules/$release"
if [ -n "${BCC_KERNEL_SOURCE:-}" ]; then
    say "headers: BCC_KERNEL_SOURCE=$BCC_KERNEL_SOURCE"
elif [ -d "$modules/build/include" ]; then
    say "headers: $modules/build present"
else
    arch_dir="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)"
    common_dir="$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)"
    [ -n "$arch_dir" ] || die "no /usr/src/linux-headers-*-amd64 after installing linux-headers-amd64"
    mkdir -p "$modules"
    ln -sfn "$arch_dir" "$modules/build"
    ln -sfn "${common_dir:-$arch_dir}" "$modules/source"
    say "headers: linked $modules/build -> $arch_dir (running kernel ships none)"
fi

# 3. tracefs and bpffs ---------------------------------------------------------
if [ ! -d /sys/kernel/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing && say "mounted tracefs on /sys/kernel/tracing"
fi
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf && say "mounted bpffs on /sys/fs/bpf"
fi
say "tracefs and bpffs mounted"

# 4. virtualenv that sees Debian's bcc (and nothing else from dist-packages) -----
if [ ! -x "$VENV/bin/python" ]; then
    say "venv: creating $VENV from $SYSTEM_PYTHON"
    "$SYSTEM_PYTHON" -m venv "$VENV"
fi
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
bcc_shim="$VENV/debian-bcc"
mkdir -p "$bcc_shim"
ln -sfn /usr/lib/python3/dist-packages/bcc "$bcc_shim/bcc"
echo "$bcc_shim" > "$site/debian-bcc.pth"
"$VENV/bin/python" -c 'import bcc' || die "venv cannot import bcc (python3-bpfcc installed?)"

# 5. the package and its dev tools, re-installed only when pyproject.toml changes
want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$STAMPS/pip" 2>/dev/null)" != "$want" ]; then
    say "pip: installing traceprobe[dev] (editable)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$REPO[dev]"
    echo "$want" > "$STAMPS/pip"
else
    say "pip: up to date"
fi

"$REPO/scripts/fetch-web-assets.sh"  # map view: graph library from npm (+ chromium for its tests)
# 6. test-world binaries (etcd, kube-apiserver, kubectl, otelcol, helm) and, unless
#    TRACEPROBE_SKIP_NODE=1 (the simulated demo), the real node's: kubelet,
#    kube-scheduler, kube-controller-manager, kube-proxy, coredns.
tools_args=()
[ -n "${TRACEPROBE_SKIP_NODE:-}" ] || tools_args+=(--node)
[ -n "${TRACEPROBE_SKIP_TOOLS:-}" ] || "$REPO/scripts/build-test-tools.sh" "${tools_args[@]}"
# 7. the real node (tests/node): containerd, runc, CNI, buildah; its images ------
if [ -z "${TRACEPROBE_SKIP_NODE:-}" ]; then
    "$REPO/scripts/node/install-packages.sh"
    "$REPO/scripts/node/build-images.sh" >/dev/null
fi
say "done"
