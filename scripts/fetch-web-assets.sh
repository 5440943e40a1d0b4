#!/usr/bin/env bash
# The map view's graph library, fetched from npm at setup time and vendored into
# the package (service_map/traceprobe_map/web/vendor/, gitignored), so the page
# needs no CDN and the repository holds no third-party code. Each tarball is
# pinned by version and checked against its registry integrity (sha512) before
# use; tarballs are cached, so a warm run copies four files and is done.
#
# Also makes sure the browser the page tests drive (Debian's chromium) is there,
# and npm to fetch with: both come from Debian when missing.
#
#   scripts/fetch-web-assets.sh            # idempotent
#   TRACEPROBE_CACHE=/elsewhere scripts/fetch-web-assets.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TRACEPROBE_CACHE:-/var/cache/traceprobe}/npm"
VENDOR="$REPO/service_map/traceprobe_map/web/vendor"

# name version file-in-package sha512-integrity. Load order matters to the page:
# layout-base <- cose-base <- cytoscape-fcose (UMD globals), and cytoscape itself.
PACKAGES=(
    "cytoscape 3.34.4 dist/cytoscape.min.js sha512-msY99tMY8iWTg+sIPGfSqDcPNOt4xcj+v/K/7qUFaCUxxlqnMkUYLBjRUzn9W5CU/R2hrmtJa5+UtovrEM2ctg=="
    "layout-base 2.0.1 layout-base.js sha512-dp3s92+uNI1hWIpPGH3jK2kxE2lMjdXdr+DH8ynZHpd6PUlH6x6cbuXnoMmiNumznqaNO31xu9e79F0uuZ0JFg=="
    "cose-base 2.2.0 cose-base.js sha512-AzlgcsCbUMymkADOJtQm3wO9S3ltPfYOFD5033keQn9NJzIbtnZj+UdBJe7DYml/8TdbtHJW3j58SOnKhWY/5g=="
    "cytoscape-fcose 2.2.0 cytoscape-fcose.js sha512-ki1/VuRIHFCzxWNrsshHYPs6L7TvLu3DL+TyIGEsRcvVERmxokbf5Gdk7mFxZnTdiGtnA4cfSmjZJMviqSuZrQ=="
)

say() { printf '[web-assets] %s\n' "$*"; }
die() { printf '[web-assets] ERROR: %s\n' "$*" >&2; exit 1; }

apt_missing=()
command -v npm >/dev/null || apt_missing+=(npm)
[ -x /usr/bin/chromium ] || apt_missing+=(chromium)
if [ ${#apt_missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${apt_missing[*]}; run as root to install them"
    say "apt: installing ${apt_missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${apt_missing[@]}" >/dev/null
fi

integrity_of() {  # the npm-style integrity string of a file
    printf 'sha512-%s' "$(openssl dgst -sha512 -binary "$1" | base64 -w0)"
}

mkdir -p "$CACHE" "$VENDOR"
stamp="$VENDOR/.versions"
want="$(printf '%s\n' "${PACKAGES[@]}")"
complete=1
for entry in "${PACKAGES[@]}"; do
    read -r name _ <<<"$entry"
    [ -s "$VENDOR/$name.js" ] && [ -s "$VENDOR/$name.LICENSE" ] || complete=0
done
if [ "$complete" = 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "vendor: up to date ($VENDOR)"
    exit 0
fi

for entry in "${PACKAGES[@]}"; do
    read -r name version file integrity <<<"$entry"
    tarball="$CACHE/$name-$version.tgz"
    if [ ! -f "$tarball" ] || [ "$(integrity_of "$tarball")" != "$integrity" ]; then
        say "npm: fetching $name@$version"
        tmp="$(mktemp -d "$CACHE/.pack.XXXXXX")"
        (cd "$tmp" && npm pack --silent "$name@$version" >/dev/null) \
            || { rm -rf "$tmp"; die "npm pack $name@$version failed"; }
        mv "$tmp/$name-$version.tgz" "$tarball"
        rm -rf "$tmp"
    fi
    got="$(integrity_of "$tarball")"
    [ "$got" = "$integrity" ] || die "$name@$version: integrity $got, expected $integrity"
    tar -xzf "$tarball" -O "package/$file" >"$VENDOR/$name.js.tmp"
    tar -xzf "$tarball" -O package/LICENSE >"$VENDOR/$name.LICENSE"
    mv "$VENDOR/$name.js.tmp" "$VENDOR/$name.js"
done
printf '%s\n' "$want" >"$stamp"
say "vendor: $(ls "$VENDOR" | tr '\n' ' ')"
