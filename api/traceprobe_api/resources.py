"""Every custom resource kind of the API group, and lookup by kind."""

from __future__ import annotations

from typing import Any

from traceprobe_api.base import Resource
from traceprobe_api.node_report import NodeReport
from traceprobe_api.probe import ClusterTraceProbe, TraceProbe

RESOURCES: tuple[type[Resource], ...] = (TraceProbe, ClusterTraceProbe, NodeReport)
BY_KIND: dict[str, type[Resource]] = {model.kind_name(): model for model in RESOURCES}


def parse(obj: dict[str, Any]) -> Resource:
    """Validate a whole object (as read from YAML or the API) into its kind's model."""
    kind = obj.get("kind")
    model = BY_KIND.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValueError(f"kind {kind!r} is not one of {sorted(BY_KIND)}")
    return model.model_validate(obj)


PROBE_PLURALS: dict[str, str] = {model.kind_name(): model.crd.plural
                                 for model in (TraceProbe, ClusterTraceProbe)}
"""Probe kind -> its resource's plural name, as every watcher and lister of probes needs."""
NODE_REPORTS = NodeReport.crd.plural
