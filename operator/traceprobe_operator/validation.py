"""Spec checks beyond the CRD schema, reported as a condition instead of a crash.

The API server already enforces the schema; re-validating with the same
pydantic models catches objects stored under an older schema and anything
the models check that CEL cannot.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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


_HOST_LABEL = re.compile(r"^[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?$")


def _host_problem(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return "its host is neither a DNS name nor an IP address"
    if labels[-1].isdigit():
        return "its host looks like an IPv4 address but is none"
    return None


def endpoint_problem(endpoint: str) -> str | None:
    """None for an endpoint an exporter can connect to, else why not. The URL itself
    is never repeated: it may carry a password."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in endpoint):
        return "contains spaces or control characters"
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        text = str(exc)
        if "out of range" in text:
            return "its port is outside 1-65535"
        if "Port" in text:
            return "its port is not a number"
        return "is not a URL"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if parts.username is not None or parts.password is not None:
        return ("carries credentials (user:password@host): put them in a Secret named by "
                "headersSecretRef instead")
    if not parts.hostname:
        return "has no host"
    if port == 0:
        return "its port is outside 1-65535"
    if parts.fragment or endpoint.endswith("#"):
        return "has a #fragment, which no endpoint takes"
    return _host_problem(parts.hostname)


def probe_problem(kind: str, body: Any) -> Problem | None:
    """What the probe's own spec gets wrong (no lookups), or None."""
    problem = spec_problem(kind, body)
    if problem:
        return Problem("InvalidSpec", problem)
    export = ((body.get("spec") or {}).get("export") or {})
    endpoint = export.get("endpoint") if isinstance(export, dict) else None
    if isinstance(endpoint, str):
        why = endpoint_problem(endpoint)
        if why:
            return Problem("ExportEndpointInvalid", f"spec.export.endpoint: {why}")
    return None
