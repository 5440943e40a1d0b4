#!/usr/bin/env bash
# Container images for the real test node, without any registry:
#
#   base      docker.io/library/debian:bookworm-slim  debootstrap rootfs -> OCI image
#   pause     traceprobe.local/pause:1                 static C binary (scripts/node/pause.c)
#   coredns   traceprobe.local/coredns:<version>       the cached CoreDNS binary alone
#   workload  traceprobe.local/workload:py3            buildah bud of scripts/node/workload.Dockerfile
#   traceprobe ghcr.io/traceprobe/traceprobe:<version>       images/traceprobe.Dockerfile
#   agent     ghcr.io/traceprobe/traceprobe-agent:<version>  images/agent.Dockerfile
#
# The project's own images are built from the work tree as it is (tracked and
# untracked files git does not ignore, in the folders the Dockerfile's
# .dockerignore lets in), under the names the chart uses by default, so the
# chart runs them with imagePullPolicy IfNotPresent and no registry.
#
#   scripts/node/build-images.sh                # build what is missing, print the list
#   scripts/node/build-images.sh --print-paths  # print the list, build nothing
#
# The list has one image a line: KEY REF ARCHIVE, where ARCHIVE is a tar that
# `ctr -n k8s.io images import` takes (tests/harness/node.py imports them into
# the test node's containerd). Each image is cached under
# ${TRACEPROBE_CACHE:-/var/cache/traceprobe}/images/<key>-<hash of its inputs>/
# and rebuilt only when an input changes. The base image is also loaded into
# buildah's own storage (vfs driver, under the same cache) so that Dockerfiles
# can say FROM debian:bookworm-slim.
#
# Needs root, scripts/node/install-packages.sh, and for coredns
# scripts/build-test-tools.sh --node.
set -euo pipefail

NODE_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
SCRIPTS=$(dirname "$NODE_DIR")
source "$SCRIPTS/tool-versions.env"

CACHE_BASE=${TRACEPROBE_CACHE:-/var/cache/traceprobe}
IMAGES="$CACHE_BASE/images"
BUILDAH_ROOT="$CACHE_BASE/buildah/storage"
BUILDAH_RUNROOT=${TRACEPROBE_BUILDAH_RUNROOT:-/run/traceprobe-buildah}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}

BASE_REF=docker.io/library/debian:$SUITE-slim
PAUSE_REF=traceprobe.local/pause:1
COREDNS_REF=traceprobe.local/coredns:$COREDNS_VERSION
WORKLOAD_REF=traceprobe.local/workload:py3

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }

PRINT_ONLY=0
case "${1:-}" in
    "") ;;
    --print-paths) PRINT_ONLY=1 ;;
    *) die "usage: $0 [--print-paths]" ;;
esac

# buildah with its own storage (vfs: works on any filesystem, no fuse-overlayfs) and
# its own network config dir: otherwise every buildah command creates
# /etc/cni/net.d/cni.lock on the host. Builds use --network host (apt-get reaches
# Debian's mirror like the host's apt does).
BUILDAH_CONF="$CACHE_BASE/buildah/containers.conf"
bah() {
    if [[ ! -f "$BUILDAH_CONF" ]]; then
        mkdir -p "$CACHE_BASE/buildah/net.d"
        printf '[network]\nnetwork_config_dir = "%s"\n' "$CACHE_BASE/buildah/net.d" >"$BUILDAH_CONF"
    fi
    CONTAINERS_CONF=$BUILDAH_CONF buildah --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" \
        --storage-driver vfs "$@"
}

hash_of() { # hash_of <inputs...>: short hash; "@PATH" stands for that file's content
    local a
    for a in "$@"; do
        if [[ $a == @* ]]; then sha256sum <"${a#@}"; else printf '%s\n' "$a"; fi
    done | sha256sum | cut -c1-16
}

coredns_bin() { "$SCRIPTS/build-test-tools.sh" --node --print-paths | sed -n 's/^COREDNS=//p'; }

# Cache keys: every input of an image, including the keys of what it builds on.
ROOTFS_KEY=$(hash_of rootfs-v1 "@$NODE_DIR/debian-rootfs.sh" "$SUITE" "$MIRROR" "$SECURITY_MIRROR")
BASE_KEY=$(hash_of base-v1 "$ROOTFS_KEY" "@$NODE_DIR/oci_image.py" "$BASE_REF")
PAUSE_KEY=$(hash_of pause-v1 "@$NODE_DIR/pause.c" "@$NODE_DIR/oci_image.py" "$PAUSE_REF" \
    "$(gcc --version 2>/dev/null | head -n1)")
COREDNS_KEY=$(hash_of coredns-v1 "$COREDNS_VERSION" "@$NODE_DIR/oci_image.py" "$COREDNS_REF")
WORKLOAD_KEY=$(hash_of workload-v1 "$BASE_KEY" "@$NODE_DIR/workload.Dockerfile" "$WORKLOAD_REF")

REPO=$(dirname "$SCRIPTS")
APP_VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n1)
TRACEPROBE_REF=ghcr.io/traceprobe/traceprobe:$APP_VERSION
AGENT_REF=ghcr.io/traceprobe/traceprobe-agent:$APP_VERSION

# context_files <Dockerfile>: the build context's files, one per line, relative to
# the repository: what its .dockerignore lets in ("!path" lines), minus what git ignores.
context_files() {
    local paths
    mapfile -t paths < <(sed -n 's/^!\(.*\)$/\1/p' "$1.dockerignore")
    git -C "$REPO" ls-files --cached --others --exclude-standard -- "${paths[@]}" |
        while read -r f; do [[ -f "$REPO/$f" ]] && echo "$f"; done | sort
}
context_key() { # context_key <Dockerfile> <ref>
    local f
    { echo "$2"; sha256sum <"$1"; sha256sum <"$1.dockerignore"
      context_files "$1" | while read -r f; do echo "$f"; sha256sum <"$REPO/$f"; done
    } | sha256sum | cut -c1-16
}
TRACEPROBE_KEY=$(hash_of traceprobe-v1 "$BASE_KEY" \
    "$(context_key "$REPO/images/traceprobe.Dockerfile" "$TRACEPROBE_REF")")
AGENT_KEY=$(hash_of agent-v1 "$BASE_KEY" "$(context_key "$REPO/images/agent.Dockerfile" "$AGENT_REF")")

ROOTFS_TAR="$IMAGES/rootfs-$SUITE-$ROOTFS_KEY/rootfs.tar"
archive() { echo "$IMAGES/$1-$2/image.tar"; }

print_list() {
    echo "base $BASE_REF $(archive base "$BASE_KEY")"
    echo "pause $PAUSE_REF $(archive pause "$PAUSE_KEY")"
    echo "coredns $COREDNS_REF $(archive coredns "$COREDNS_KEY")"
    echo "workload $WORKLOAD_REF $(archive workload "$WORKLOAD_KEY")"
    echo "traceprobe $TRACEPROBE_REF $(archive traceprobe "$TRACEPROBE_KEY")"
    echo "agent $AGENT_REF $(archive agent "$AGENT_KEY")"
}

if [[ $PRINT_ONLY == 1 ]]; then
    print_list
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, buildah)"
for cmd in debootstrap buildah gcc python3; do
    command -v "$cmd" >/dev/null || die "$cmd missing: run scripts/node/install-packages.sh"
done

mkdir -p "$IMAGES"
exec 9>"$IMAGES/.build.lock"
if ! flock -n 9; then
    log "another build-images.sh is running; waiting for its lock..."
    flock 9
fi
WORK=$(mktemp -d "$IMAGES/.work.XXXXXX")
trap 'rm -rf --one-file-system "$WORK"' EXIT
trap 'exit 130' INT TERM

done_msg() { log "$1: $2 in $(($SECONDS - $3))s"; }

# install_archive <key> <hash> <file>: atomic move into the cache.
install_archive() {
    local dest
    dest=$(archive "$1" "$2")
    mkdir -p "$(dirname "$dest")"
    mv -f "$3" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
}

# --- rootfs and base -----------------------------------------------------------
if [[ ! -f "$ROOTFS_TAR" ]]; then
    start=$SECONDS
    log "rootfs: debootstrap $SUITE (first time, about a minute)..."
    mkdir -p "$(dirname "$ROOTFS_TAR")"
    SUITE=$SUITE MIRROR=$MIRROR SECURITY_MIRROR=$SECURITY_MIRROR \
        "$NODE_DIR/debian-rootfs.sh" "$ROOTFS_TAR"
    done_msg rootfs built "$start"
else
    log "rootfs $SUITE: cached"
fi

if [[ ! -f "$(archive base "$BASE_KEY")" ]]; then
    start=$SECONDS
    log "base: $BASE_REF from the rootfs..."
    python3 "$NODE_DIR/oci_image.py" --name "$BASE_REF" --layer "$ROOTFS_TAR" --cmd bash \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        -o "$WORK/base.tar" >/dev/null
    install_archive base "$BASE_KEY" "$WORK/base.tar"
    done_msg base built "$start"
else
    log "base $BASE_REF: cached"
fi

# buildah's storage holds the base under its Docker Hub name, for FROM lines.
BASE_STAMP="$CACHE_BASE/buildah/base-$BASE_KEY"
if [[ ! -f "$BASE_STAMP" ]] || ! bah inspect --type image "$BASE_REF" >/dev/null 2>&1; then
    start=$SECONDS
    log "base: loading into buildah's storage ($BUILDAH_ROOT)..."
    mkdir -p "$BUILDAH_ROOT"
    bah rmi -f "$BASE_REF" >/dev/null 2>&1 || true
    bah pull -q "oci-archive:$(archive base "$BASE_KEY")" >"$WORK/pulled" 2>"$WORK/pull.log" ||
        { cat "$WORK/pull.log" >&2; die "buildah pull of the base image failed"; }
    bah tag "$(cat "$WORK/pulled")" "$BASE_REF"
    rm -f "$CACHE_BASE"/buildah/base-*
    touch "$BASE_STAMP"
    done_msg base "loaded into buildah" "$start"
fi

# --- pause -----------------------------------------------------------------------
if [[ ! -f "$(archive pause "$PAUSE_KEY")" ]]; then
    start=$SECONDS
    log "pause: compiling scripts/node/pause.c (static)..."
    gcc -static -Os -s -Wall -Wextra -Werror -o "$WORK/pause" "$NODE_DIR/pause.c"
    "$WORK/pause" -v | grep -q traceprobe-pause || die "pause smoke test failed"
    python3 "$NODE_DIR/oci_image.py" --name "$PAUSE_REF" --file "pause=$WORK/pause:0755" \
        --entrypoint /pause -o "$WORK/pause.tar" >/dev/null
    install_archive pause "$PAUSE_KEY" "$WORK/pause.tar"
    done_msg pause built "$start"
else
    log "pause $PAUSE_REF: cached"
fi

# --- workload (buildah bud) ----------------------------------------------------
if [[ ! -f "$(archive workload "$WORKLOAD_KEY")" ]]; then
    start=$SECONDS
    log "workload: buildah bud scripts/node/workload.Dockerfile (apt-get inside the build)..."
    mkdir -p "$WORK/ctx"
    if ! bah bud --isolation chroot --network host --pull=never --layers=false \
        -f "$NODE_DIR/workload.Dockerfile" -t "$WORKLOAD_REF" "$WORK/ctx" >"$WORK/bud.log" 2>&1; then
        tail -n 40 "$WORK/bud.log" >&2
        die "buildah bud of workload.Dockerfile failed (see above)"
    fi
    bah push -q "$WORKLOAD_REF" "docker-archive:$WORK/workload.tar:$WORKLOAD_REF" >"$WORK/push.log" 2>&1 ||
        { cat "$WORK/push.log" >&2; die "buildah push of $WORKLOAD_REF failed"; }
    install_archive workload "$WORKLOAD_KEY" "$WORK/workload.tar"
    bah rmi --prune >/dev/null 2>&1 || true # the previous build, now untagged
    done_msg workload built "$start"
else
    log "workload $WORKLOAD_REF: cached"
fi

# --- the project's images (buildah bud of images/*.Dockerfile) --------------------
# The host's CA bundle, and pip/npm told to use it, are mounted into RUN steps: a
# TLS-inspecting proxy between this machine and the registries is trusted by the
# host only. Nothing of it stays in the image.
HOST_CA=/etc/ssl/certs/ca-certificates.crt
trust_args() {
    [[ -f $HOST_CA ]] || return 0
    printf '[global]\ncert = /run/host-ca/ca-certificates.crt\n' >"$WORK/pip.conf"
    printf 'cafile=/run/host-ca/ca-certificates.crt\n' >"$WORK/npmrc"
    printf '%s\n' -v "$HOST_CA:/run/host-ca/ca-certificates.crt:ro" \
        -v "$WORK/pip.conf:/etc/pip.conf:ro" -v "$WORK/npmrc:/etc/npmrc:ro"
}

build_project_image() { # build_project_image <key> <hash> <Dockerfile> <ref>
    local key=$1 hash=$2 dockerfile=$3 ref=$4 start=$SECONDS ctx="$WORK/ctx-$1" f trust
    if [[ -f "$(archive "$key" "$hash")" ]]; then
        log "$key $ref: cached"
        return
    fi
    log "$key: buildah bud $(basename "$dockerfile") (first time for these sources: minutes)..."
    mkdir -p "$ctx"
    context_files "$dockerfile" | while read -r f; do
        mkdir -p "$ctx/$(dirname "$f")"
        cp -p "$REPO/$f" "$ctx/$f"
    done
    mapfile -t trust < <(trust_args)
    if ! bah bud --isolation chroot --network host --pull=never --layers=false "${trust[@]}" \
        -f "$dockerfile" -t "$ref" "$ctx" >"$WORK/bud-$key.log" 2>&1; then
        tail -n 40 "$WORK/bud-$key.log" >&2
        cp "$WORK/bud-$key.log" "$IMAGES/$key-failed.log"
        die "buildah bud of $dockerfile failed (see above; whole log: $IMAGES/$key-failed.log)"
    fi
    bah push -q "$ref" "docker-archive:$WORK/$key.tar:$ref" >"$WORK/push-$key.log" 2>&1 ||
        { cat "$WORK/push-$key.log" >&2; die "buildah push of $ref failed"; }
    install_archive "$key" "$hash" "$WORK/$key.tar"
    # Older builds of this image (other sources) are hundreds of MB each.
    find "$IMAGES" -maxdepth 1 -name "$key-*" ! -name "$key-$hash" -exec rm -rf {} +
    bah rmi --prune >/dev/null 2>&1 || true
    done_msg "$key" built "$start"
}
build_project_image traceprobe "$TRACEPROBE_KEY" "$REPO/images/traceprobe.Dockerfile" "$TRACEPROBE_REF"
build_project_image agent "$AGENT_KEY" "$REPO/images/agent.Dockerfile" "$AGENT_REF"

# --- coredns (last: it needs build-test-tools.sh --node) ------------------------
if [[ ! -f "$(archive coredns "$COREDNS_KEY")" ]]; then
    start=$SECONDS
    bin=$(coredns_bin)
    [[ -x "$bin" ]] || die "coredns not built at $bin: run scripts/build-test-tools.sh --node"
    log "coredns: $COREDNS_REF from $bin..."
    python3 "$NODE_DIR/oci_image.py" --name "$COREDNS_REF" --file "coredns=$bin:0755" \
        --entrypoint /coredns -o "$WORK/coredns.tar" >/dev/null
    install_archive coredns "$COREDNS_KEY" "$WORK/coredns.tar"
    done_msg coredns built "$start"
else
    log "coredns $COREDNS_REF: cached"
fi

log "all images ready:"
print_list
