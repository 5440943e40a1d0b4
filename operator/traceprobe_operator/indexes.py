"""kopf indexes: the operator's live view of Nodes and NodeReports.

kopf keeps them from one watch per resource kind and hands them to every
resource handler as keyword arguments named after the functions below, fully
populated before the first handler runs. Status timers read them instead of
listing the cluster on every tick.

Read them only on the event loop (in async handlers): kopf updates them there
between awaits, so a snapshot taken without awaiting is consistent, while a
handler thread iterating them could race an update.
"""

from __future__ import annotations

from typing import Any

import kopf

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_api.resources import NODE_REPORTS
from traceprobe_operator.node_reports import ProbeKey, ReportedProbe, reported_probes

NodeLabels = kopf.Index[str, dict[str, str]]
ProbeReports = kopf.Index[ProbeKey, ReportedProbe]
# The indexes' ids, which are also the names of the handlers' keyword arguments.
NODE_LABELS = "node_labels"
PROBE_REPORTS = "probe_reports"


@kopf.index("v1", "nodes", id=NODE_LABELS)
async def node_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    """Node name -> its labels, for matching probes' node selectors."""
    return {name: dict(labels)}


@kopf.index(API_GROUP, API_VERSION, NODE_REPORTS, id=PROBE_REPORTS)
async def probe_reports(body: kopf.Body, **_: Any) -> dict[ProbeKey, ReportedProbe]:
    """Probe -> one entry per node reporting on it. A report that turns malformed
    yields no keys, which drops its earlier entries (None would keep them)."""
    return reported_probes(body)


def nodes_of(index: NodeLabels) -> list[tuple[str, dict[str, str]]]:
    """Every indexed node with its labels."""
    return [(name, labels) for name, store in index.items() for labels in store]


def reports_on(index: ProbeReports, key: ProbeKey) -> list[ReportedProbe]:
    """The nodes' entries for one probe."""
    return list(index.get(key, ()))
