"""Spec checks beyond the CRD schema, reported as a condition instead of a crash.

The API server already enforces the schema; re-validating with the same
pydantic models catches objects stored under an older schema and anything
the models check that CEL cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from traceprobe_api.probe import ClusterTraceProbe, TraceProbe

MODELS: dict[str, type[TraceProbe] | type[ClusterTraceProbe]] = {
    "TraceProbe": TraceProbe, "ClusterTraceProbe": ClusterTraceProbe}


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def spec_problem(kind: str, body: Any) -> str | None:
    """None when the spec is valid, else one line naming the field(s) and the problem."""
    model = MODELS.get(kind)
    if model is None:
        return f"unknown kind {kind!r}: expected one of {sorted(MODELS)}"
    spec = body.get("spec")
    if spec is not None and not isinstance(spec, dict):
        return f"spec: must be an object, not {type(spec).__name__}"
    try:
        model.model_validate({"spec": spec or {}})
    except ValidationError as exc:
        problems = [f"{_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        return "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                          if len(problems) > 5 else "")
    return None


@dataclass(frozen=True)
class Problem:
    """Why a probe is not accepted: a CamelCase reason naming the field, and one line."""

    reason: str
    message: str


def probe_problem(kind: str, body: Any) -> Problem | None:
    """What the probe's own spec gets wrong (no lookups), or None."""
    problem = spec_problem(kind, body)
    return Problem("InvalidSpec", problem) if problem else None
