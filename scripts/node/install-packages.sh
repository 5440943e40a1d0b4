#!/usr/bin/env bash
# Debian packages for the real test node (tests/node, tests/harness/node.py):
# the container runtime, CNI plugins, and what builds images without a registry.
# Idempotent; a warm run only asks dpkg. Run as root.
#
# Installing containerd starts no daemon here (no systemd, policy-rc.d): the
# test harness runs its own containerd with its own config, state and socket.
set -euo pipefail

PACKAGES=(
    containerd                  # 1.6.20 on bookworm; CRI for the kubelet
    runc                        # 1.1.5; the OCI runtime containerd calls
    containernetworking-plugins # bridge, host-local, loopback, portmap in /usr/lib/cni
    debootstrap                 # the Debian base root filesystem
    debian-archive-keyring      # debootstrap checks the Release signature with it
    buildah                     # Dockerfile builds (vfs storage, chroot isolation)
    iptables conntrack iproute2 # kube-proxy (iptables mode), CNI, the node-IP veth
    gcc libc6-dev               # the static pause binary (scripts/node/pause.c)
    python3                     # scripts/node/oci_image.py
)

say() { printf '[node] %s\n' "$*"; }
die() { printf '[node] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (apt-get install)"

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    say "apt: all ${#PACKAGES[@]} node packages present"
    exit 0
fi
say "apt: installing ${missing[*]}"
start=$SECONDS
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
say "apt: installed in $((SECONDS - start))s"
