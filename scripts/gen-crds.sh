#!/usr/bin/env bash
# Regenerates crds/*.yaml from the pydantic models in api/traceprobe_api.
# Usage: scripts/gen-crds.sh [--check]   (--check: exit 1 if the committed files drift)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRACEPROBE_VENV:-$REPO/.venv}"
cd "$REPO"
mode="--write"
if [[ "${1:-}" == "--check" ]]; then mode="--check"; fi
exec "$VENV/bin/python" -m traceprobe_api.crd_schema "$mode" crds/
