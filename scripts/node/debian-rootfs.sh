#!/usr/bin/env bash
# debian-rootfs.sh <out.tar>: a minimal Debian root filesystem as a tar, made by
# debootstrap from Debian's packages, trimmed like the official "-slim" images
# (no docs, man pages or locales; no apt lists; no host resolv.conf/hostname).
#
# Called by scripts/node/build-images.sh, which caches the result keyed by this
# file's content and the variables below; run as root.
#
# SUITE, MIRROR, SECURITY_MIRROR can be overridden from the environment (they
# are part of the cache key).
set -euo pipefail

OUT=${1:?usage: debian-rootfs.sh <out.tar>}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}

say() { printf '[images] %s\n' "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { echo "debian-rootfs.sh: run as root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap missing: scripts/node/install-packages.sh" >&2; exit 1; }

TARGET=$(mktemp -d "$(dirname "$OUT")/.rootfs.XXXXXX")
cleanup() {
    # debootstrap mounts proc/sys in the target while it works; a failed run can
    # leave them mounted: never rm -rf through a mount.
    local m
    for m in $(awk -v t="$TARGET" 'index($2, t) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$TARGET"
}
trap cleanup EXIT

say "debootstrap $SUITE (minbase) from $MIRROR..."
if ! debootstrap --variant=minbase --arch=amd64 "$SUITE" "$TARGET" "$MIRROR" >"$TARGET.log" 2>&1; then
    tail -n 30 "$TARGET.log" >&2
    tail -n 30 "$TARGET/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    rm -f "$TARGET.log"
    echo "debootstrap failed" >&2
    exit 1
fi
rm -f "$TARGET.log"

# What later apt-get runs in images see: the suite, its updates and security.
rm -f "$TARGET/etc/apt/sources.list"
cat >"$TARGET/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# Slim: what the official -slim images leave out, for later installs too.
cat >"$TARGET/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat >"$TARGET/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$TARGET/etc/apt/apt.conf.d/docker-no-languages"
find "$TARGET/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$TARGET/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$TARGET"/usr/share/{man,groff,info,lintian,linda}/* "$TARGET"/var/cache/apt/*.bin
find "$TARGET/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
rm -rf "$TARGET"/var/lib/apt/lists/* "$TARGET"/var/cache/apt/archives/*.deb \
    "$TARGET"/var/log/* "$TARGET"/tmp/* "$TARGET"/debootstrap
# The runtime provides these.
rm -f "$TARGET/etc/resolv.conf" "$TARGET/etc/hostname"
: >"$TARGET/etc/hosts"
rm -rf "$TARGET"/dev/* "$TARGET"/proc/* "$TARGET"/sys/* "$TARGET"/run/*

# Deterministic tar: sorted, numeric owners, one mtime.
tar -C "$TARGET" --sort=name --numeric-owner --xattrs --xattrs-include='security.capability' \
    --mtime='2000-01-01 00:00:00Z' --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -cf "$OUT.tmp" .
mv -f "$OUT.tmp" "$OUT"
say "rootfs: $(du -sh "$OUT" | cut -f1) ($(tar -tf "$OUT" | wc -l) entries)"
