#!/usr/bin/env bash
# Runs the suite (quality gates included: they are tests in tests/unit).
# Usage: scripts/test.sh [unit|bpf|cluster|e2e|node] [extra pytest args]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRACEPROBE_VENV:-$REPO/.venv}"
cd "$REPO"
args=()
case "${1:-}" in
    unit|bpf|cluster|e2e|node) args+=("tests/$1"); shift ;;
esac
exec "$VENV/bin/python" -m pytest "${args[@]}" "$@"
