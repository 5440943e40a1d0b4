#!/usr/bin/env bash
# Build the pinned test-world binaries (etcd, kube-apiserver, kubectl, otelcol,
# helm) from Go modules into a version-keyed cache outside the repository.
#
#   scripts/build-test-tools.sh                # build what is missing, verify, print paths
#   scripts/build-test-tools.sh --print-paths  # print NAME=path lines, build nothing
#   scripts/build-test-tools.sh --node [...]   # also the real-node tools: kubelet,
#                                              # kube-scheduler, kube-controller-manager,
#                                              # kube-proxy, coredns
#
# TRACEPROBE_NODE_TOOLS=1 in the environment is the same as --node.
#
# Versions come from scripts/tool-versions.env. Each tool lands at
#   ${TRACEPROBE_CACHE:-/var/cache/traceprobe}/tools/<tool>-<version>/<tool>
# and is only (re)built when that file is missing. Builds happen in a temporary
# directory next to the cache and are moved into place atomically after a
# smoke test, so an interrupted build never leaves a half-written binary.
#
# If KUBEBUILDER_ASSETS is set and contains etcd / kube-apiserver / kubectl,
# those binaries are used instead of being built.
#
# Go build and module caches stay in the default GOCACHE / GOMODCACHE.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
GOTOOLS_DIR="$SCRIPT_DIR/gotools"
VERSIONS_FILE="$SCRIPT_DIR/tool-versions.env"

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

[[ -r "$VERSIONS_FILE" ]] || die "missing $VERSIONS_FILE"
# shellcheck source=tool-versions.env
source "$VERSIONS_FILE"

PRINT_ONLY=0
WITH_NODE=0
[[ "${TRACEPROBE_NODE_TOOLS:-0}" == 1 ]] && WITH_NODE=1
for arg in "$@"; do
    case $arg in
        --print-paths) PRINT_ONLY=1 ;;
        --node) WITH_NODE=1 ;;
        *) die "usage: $0 [--print-paths] [--node]" ;;
    esac
done

required=(KUBERNETES_VERSION ETCD_VERSION OTELCOL_VERSION HELM_VERSION)
[[ $WITH_NODE == 1 ]] && required+=(COREDNS_VERSION)
for v in "${required[@]}"; do
    [[ -n "${!v:-}" ]] || die "$v is not set in $VERSIONS_FILE"
done
OTELCOL_VERSION=${OTELCOL_VERSION#v}

CACHE_BASE=${TRACEPROBE_CACHE:-/var/cache/traceprobe}
ROOT="$CACHE_BASE/tools"
TOOLS=(etcd kube-apiserver kubectl otelcol helm)
# The real-node tools (tests/node, tests/harness/node.py): only with --node.
NODE_TOOLS=(kubelet kube-scheduler kube-controller-manager kube-proxy coredns)
[[ $WITH_NODE == 1 ]] && TOOLS+=("${NODE_TOOLS[@]}")

tool_version() {
    case "$1" in
        etcd) echo "$ETCD_VERSION" ;;
        kube-apiserver | kubectl) echo "$KUBERNETES_VERSION" ;;
        kubelet | kube-scheduler | kube-controller-manager | kube-proxy) echo "$KUBERNETES_VERSION" ;;
        coredns) echo "$COREDNS_VERSION" ;;
        otelcol) echo "$OTELCOL_VERSION" ;;
        helm) echo "$HELM_VERSION" ;;
        builder) echo "$OTELCOL_VERSION" ;;
        *) die "unknown tool $1" ;;
    esac
}

# Path from KUBEBUILDER_ASSETS, if it provides this tool.
kubebuilder_asset() {
    case "$1" in etcd | kube-apiserver | kubectl) ;; *) return 1 ;; esac
    [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/$1" && -f "${KUBEBUILDER_ASSETS}/$1" ]] || return 1
    echo "${KUBEBUILDER_ASSETS}/$1"
}

cache_path() { echo "$ROOT/$1-$(tool_version "$1")/$1"; }

tool_path() {
    kubebuilder_asset "$1" || cache_path "$1"
}

env_name() { local n=${1^^}; echo "${n//-/_}"; }

print_paths() {
    local t
    for t in "${TOOLS[@]}"; do
        echo "$(env_name "$t")=$(tool_path "$t")"
    done
}

if [[ $PRINT_ONLY == 1 ]]; then
    print_paths
    exit 0
fi

is_ready() { [[ -f "$1" && -x "$1" ]]; }

# ---------------------------------------------------------------------------
# Fast (warm) path: everything already present -> no Go, no locks.
# ---------------------------------------------------------------------------
missing=()
for t in "${TOOLS[@]}"; do
    if p=$(kubebuilder_asset "$t"); then
        log "$t: using $p (from KUBEBUILDER_ASSETS)"
    elif is_ready "$(cache_path "$t")"; then
        log "$t $(tool_version "$t"): cached"
    else
        missing+=("$t")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    print_paths
    exit 0
fi

# ---------------------------------------------------------------------------
# Cold path.
# ---------------------------------------------------------------------------
GO=${GO:-$(command -v go || true)}
[[ -z "$GO" && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
[[ -n "$GO" && -x "$GO" ]] || die "Go toolchain not found (install Go or set GO=/path/to/go)"
export PATH="$(dirname "$GO"):$PATH" # OCB runs "go" from PATH
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0
unset GOBIN GOOS GOARCH

mkdir -p "$ROOT" || die "cannot create cache dir $ROOT (set TRACEPROBE_CACHE to a writable dir)"
exec 9>"$ROOT/.build.lock"
if ! flock -n 9; then
    log "another build-test-tools.sh is running; waiting for its lock..."
    flock 9
fi

WORK=$(mktemp -d "$ROOT/.work.XXXXXX")
cleanup() { chmod -R u+w "$WORK" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# install_binary <tool> <built-file>: atomic move into the cache.
install_binary() {
    local dest
    dest=$(cache_path "$1")
    mkdir -p "$(dirname "$dest")"
    chmod 0755 "$2"
    mv -f "$2" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
}

# run_logged <logfile> <cmd...>: run, on failure show the log tail and die.
run_logged() {
    local logf=$1
    shift
    if ! "$@" >"$logf" 2>&1; then
        echo "----- last 40 lines of output: $* -----" >&2
        tail -n 40 "$logf" >&2
        echo "-----" >&2
        return 1
    fi
}

k8s_ldflags() {
    local v=$1 major minor rest
    rest=${v#v}
    major=${rest%%.*}
    rest=${rest#*.}
    minor=${rest%%.*}
    local flags="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=0000000000000000000000000000000000000000"
    done
    echo "$flags"
}

K8S_MODULE_READY=0

# prepare_kubernetes_module: the wrapper module in $WORK/kubernetes (once per run).
prepare_kubernetes_module() {
    [[ $K8S_MODULE_READY == 1 ]] && return 0
    local v=$KUBERNETES_VERSION dir="$WORK/kubernetes" modfile staging
    staging="v0.${v#v1.}"
    mkdir -p "$dir/out"
    modfile=$("$GO" mod download -json "k8s.io/kubernetes@$v" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p') ||
        die "go mod download k8s.io/kubernetes@$v failed"
    [[ -f "$modfile" ]] || die "could not locate go.mod of k8s.io/kubernetes@$v"
    sed "s/@KUBERNETES_VERSION@/$v/g" "$GOTOOLS_DIR/kubernetes/go.mod.in" >"$dir/go.mod"
    {
        echo
        echo "// generated from k8s.io/kubernetes@$v go.mod"
        echo "replace ("
        sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/src/k8s\.io/.*$#\t\1 => \1 '"$staging"'#p' "$modfile"
        echo ")"
    } >>"$dir/go.mod"
    grep -q "k8s.io/apiserver => k8s.io/apiserver $staging" "$dir/go.mod" ||
        die "failed to generate staging replaces from $modfile"
    local start=$SECONDS
    log "k8s.io/kubernetes $v: preparing the wrapper module (go mod tidy)..."
    (cd "$dir" && run_logged "$dir/tidy.log" "$GO" mod tidy) ||
        die "go mod tidy failed for k8s.io/kubernetes@$v wrapper (see above)"
    log "k8s.io/kubernetes $v: wrapper module ready in $((SECONDS - start))s"
    K8S_MODULE_READY=1
}

build_kubernetes() { # args: tools from k8s.io/kubernetes/cmd, built by one go build
    local v=$KUBERNETES_VERSION dir="$WORK/kubernetes" t
    prepare_kubernetes_module
    local pkgs=()
    for t in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$t"); done
    (cd "$dir" && run_logged "$dir/build.log" "$GO" build -trimpath -ldflags "$(k8s_ldflags "$v")" -o "$dir/out/" "${pkgs[@]}") ||
        die "go build ${pkgs[*]} failed (see above)"
    for t in "$@"; do
        local out
        case $t in
            kube-apiserver) out=$("$dir/out/$t" --version 2>&1) || true ;;
            kubectl) out=$("$dir/out/$t" version --client 2>&1) || true ;;
            *) out=$("$dir/out/$t" --version 2>&1) || true ;; # kubelet, kube-proxy, ...
        esac
        grep -qF "$v" <<<"$out" || die "$t smoke test failed: expected $v in version output, got: $out"
        log "$t $v: verified ($(head -n1 <<<"$out"))"
        install_binary "$t" "$dir/out/$t"
    done
}

build_etcd() {
    local v=$ETCD_VERSION dir="$WORK/etcd" out
    mkdir -p "$dir"
    cp "$GOTOOLS_DIR/etcd/main.go" "$dir/"
    sed "s/@ETCD_VERSION@/$v/g" "$GOTOOLS_DIR/etcd/go.mod.in" >"$dir/go.mod"
    (cd "$dir" && run_logged "$dir/tidy.log" "$GO" mod tidy) || die "go mod tidy failed for etcd $v wrapper (see above)"
    (cd "$dir" && run_logged "$dir/build.log" "$GO" build -trimpath -ldflags "-s -w" -o "$dir/etcd" .) ||
        die "go build etcd $v failed (see above)"
    out=$("$dir/etcd" --version 2>&1) || true
    grep -qF "etcd Version: ${v#v}" <<<"$out" || die "etcd smoke test failed: expected ${v#v}, got: $out"
    log "etcd $v: verified (etcd Version: ${v#v})"
    install_binary etcd "$dir/etcd"
}

build_helm() {
    local v=$HELM_VERSION dir="$WORK/helm" out
    mkdir -p "$dir/bin"
    local pkg=helm.sh/helm/v3/internal/version
    (cd "$dir" && run_logged "$dir/build.log" env GOBIN="$dir/bin" "$GO" install -trimpath \
        -ldflags "-s -w -X $pkg.version=$v -X $pkg.gitTreeState=clean" "helm.sh/helm/v3/cmd/helm@$v") ||
        die "go install helm.sh/helm/v3/cmd/helm@$v failed (see above)"
    out=$(HELM_CACHE_HOME="$dir/h" HELM_CONFIG_HOME="$dir/h" HELM_DATA_HOME="$dir/h" "$dir/bin/helm" version 2>&1) || true
    grep -qF "Version:\"$v\"" <<<"$out" || die "helm smoke test failed: expected $v, got: $out"
    log "helm $v: verified"
    install_binary helm "$dir/bin/helm"
}

free_port() {
    python3 - <<'EOF' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
EOF
}

build_builder() { # the OpenTelemetry Collector Builder (OCB) itself
    local v=$OTELCOL_VERSION dest
    dest=$(cache_path builder)
    is_ready "$dest" && return 0
    log "builder $v: installing OpenTelemetry Collector Builder..."
    local dir="$WORK/builder"
    mkdir -p "$dir/bin"
    (cd "$dir" && run_logged "$dir/build.log" env GOBIN="$dir/bin" "$GO" install -trimpath -ldflags "-s -w" \
        "go.opentelemetry.io/collector/cmd/builder@v$v") ||
        die "go install go.opentelemetry.io/collector/cmd/builder@v$v failed (see above)"
    install_binary builder "$dir/bin/builder"
}

verify_otelcol() {
    local bin=$1 dir=$2 grpc http pid ok=0 i
    grpc=$(free_port)
    http=$(free_port)
    while [[ "$http" == "$grpc" ]]; do http=$(free_port); done
    cat >"$dir/smoke.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$grpc
      http:
        endpoint: 127.0.0.1:$http
exporters:
  file:
    path: $dir/smoke-out.json
    flush_interval: 100ms
  debug: {}
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [file, debug]
EOF
    "$bin" validate --config="$dir/smoke.yaml" >"$dir/validate.log" 2>&1 ||
        { cat "$dir/validate.log" >&2; die "otelcol smoke test: config validation failed"; }
    "$bin" --config="$dir/smoke.yaml" >"$dir/smoke.log" 2>&1 &
    pid=$!
    local payload='{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"traceprobe-smoke"}}]},"scopeMetrics":[{"scope":{"name":"smoke"},"metrics":[{"name":"traceprobe_smoke_metric","gauge":{"dataPoints":[{"asInt":"42","timeUnixNano":"1700000000000000000"}]}}]}]}]}'
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        if curl -sf --noproxy '*' -m 2 -X POST -H 'Content-Type: application/json' \
            --data "$payload" "http://127.0.0.1:$http/v1/metrics" >/dev/null 2>&1; then
            ok=1
            break
        fi
        sleep 0.2
    done
    if [[ $ok == 1 ]]; then
        ok=0
        for i in $(seq 1 50); do
            if grep -q traceprobe_smoke_metric "$dir/smoke-out.json" 2>/dev/null; then ok=1; break; fi
            sleep 0.2
        done
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [[ $ok != 1 ]]; then
        echo "----- collector log -----" >&2
        tail -n 40 "$dir/smoke.log" >&2
        die "otelcol smoke test failed: OTLP/HTTP metric was not written by the file exporter"
    fi
}

build_otelcol() {
    local v=$OTELCOL_VERSION dir="$WORK/otelcol" out
    build_builder
    mkdir -p "$dir"
    sed -e "s/@OTELCOL_VERSION@/$v/g" -e "s#@OUTPUT_PATH@#$dir/dist#g" \
        "$GOTOOLS_DIR/otelcol/manifest.yaml" >"$dir/manifest.yaml"
    (cd "$dir" && run_logged "$dir/build.log" "$(cache_path builder)" --config="$dir/manifest.yaml") ||
        die "OpenTelemetry Collector Builder failed for $v (see above)"
    [[ -x "$dir/dist/otelcol" ]] || die "builder did not produce $dir/dist/otelcol"
    out=$("$dir/dist/otelcol" --version 2>&1) || true
    grep -qF "$v" <<<"$out" || die "otelcol smoke test failed: expected $v in version output, got: $out"
    verify_otelcol "$dir/dist/otelcol" "$dir"
    log "otelcol $v: verified ($out; OTLP/HTTP -> file exporter OK)"
    install_binary otelcol "$dir/dist/otelcol"
}

# dns_query_a <name> <port>: the IPv4 addresses (one a line) that the DNS
# server on 127.0.0.1:<port> answers for <name>. Host python3, stdlib only.
dns_query_a() {
    python3 - "$1" "$2" <<'PYEOF'
import socket, struct, sys
name, port = sys.argv[1], int(sys.argv[2])
q = struct.pack(">HHHHHH", 0x7470, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.sendto(q, ("127.0.0.1", port))
data, _ = s.recvfrom(4096)
answers = struct.unpack(">H", data[6:8])[0]
i = len(q)
for _ in range(answers):
    if data[i] & 0xC0 == 0xC0:
        i += 2
    else:
        while data[i]:
            i += data[i] + 1
        i += 1
    rtype, _, _, rdlen = struct.unpack(">HHIH", data[i:i + 10])
    i += 10
    if rtype == 1 and rdlen == 4:
        print(socket.inet_ntoa(data[i:i + 4]))
    i += rdlen
PYEOF
}

verify_coredns() { # <binary> <dir>: serve a hosts entry on loopback, query it
    local bin=$1 dir=$2 port pid ok=0 i
    port=$(free_port)
    cat >"$dir/Corefile" <<EOF
smoke.traceprobe.test:$port {
    bind 127.0.0.1
    hosts {
        127.0.0.53 a.smoke.traceprobe.test
    }
}
EOF
    "$bin" -conf "$dir/Corefile" >"$dir/smoke.log" 2>&1 &
    pid=$!
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        if [[ "$(dns_query_a a.smoke.traceprobe.test "$port" 2>/dev/null)" == 127.0.0.53 ]]; then
            ok=1
            break
        fi
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [[ $ok != 1 ]]; then
        echo "----- coredns log -----" >&2
        tail -n 40 "$dir/smoke.log" >&2
        die "coredns smoke test failed: its hosts plugin gave no A record on 127.0.0.1:$port"
    fi
}

build_coredns() {
    local v=$COREDNS_VERSION dir="$WORK/coredns" out
    mkdir -p "$dir/bin"
    (cd "$dir" && run_logged "$dir/build.log" env GOBIN="$dir/bin" "$GO" install -trimpath \
        -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$v" \
        "github.com/coredns/coredns@$v") ||
        die "go install github.com/coredns/coredns@$v failed (see above)"
    out=$("$dir/bin/coredns" -version 2>&1) || true
    grep -qF "CoreDNS-${v#v}" <<<"$out" || die "coredns smoke test failed: expected CoreDNS-${v#v}, got: $out"
    "$dir/bin/coredns" -plugins 2>&1 | grep -Eqx '[[:space:]]*(dns\.)?kubernetes' ||
        die "coredns smoke test failed: the kubernetes plugin is not compiled in"
    verify_coredns "$dir/bin/coredns" "$dir"
    log "coredns $v: verified ($(head -n1 <<<"$out"); kubernetes plugin in; answered on loopback)"
    install_binary coredns "$dir/bin/coredns"
}

declare -A started=()
k8s_todo=()
for t in "${missing[@]}"; do
    # Another process may have finished it while we waited for the lock.
    if is_ready "$(cache_path "$t")"; then
        log "$t $(tool_version "$t"): cached (built concurrently)"
        continue
    fi
    case $t in
        kube-apiserver | kubectl) k8s_todo+=("$t") ;;
    esac
done

for t in "${missing[@]}"; do
    is_ready "$(cache_path "$t")" && continue
    v=$(tool_version "$t")
    start=$SECONDS
    case $t in
        etcd)
            log "etcd $v: building (first time, 1-3 minutes)..."
            build_etcd
            ;;
        kubelet | kube-scheduler | kube-controller-manager | kube-proxy)
            # One go build per tool, so that each one's wall time shows.
            log "$t $v: building (first time; minutes, fewer with a warm Go cache)..."
            build_kubernetes "$t"
            ;;
        coredns)
            log "coredns $v: building (first time, a few minutes)..."
            build_coredns
            ;;
        kube-apiserver | kubectl)
            [[ -n "${started[k8s]:-}" ]] && continue
            started[k8s]=1
            for k in "${k8s_todo[@]}"; do
                log "$k $v: building (first time, several minutes)..."
            done
            build_kubernetes "${k8s_todo[@]}"
            t=${k8s_todo[*]}
            ;;
        otelcol)
            log "otelcol $v: building with the OpenTelemetry Collector Builder (first time, several minutes)..."
            build_otelcol
            ;;
        helm)
            log "helm $v: building (first time, a few minutes)..."
            build_helm
            ;;
    esac
    log "$t $v: built in $((SECONDS - start))s"
done

for t in "${TOOLS[@]}"; do
    is_ready "$(tool_path "$t")" || die "$t is still missing at $(tool_path "$t")"
done
log "all tools ready:"
print_paths
