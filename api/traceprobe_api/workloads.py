"""Which workload owns a pod, from its owner references (pure, shared).

The agent names the local side of a record with it and the service map the
remote side, so both must agree.
"""

from __future__ import annotations

from typing import Any


def workload_of(meta: dict[str, Any]) -> tuple[str, str]:
    """(kind, name) of the workload that owns a pod.

    A ReplicaSet named `<deployment>-<pod-template-hash>` belongs to that
    Deployment (the hash is on the pod's labels), so no ReplicaSet watch is
    needed. Job → CronJob needs the Job's own owner: the service map resolves it.
    """
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
    if not owners:
        return "Pod", str(meta.get("name", ""))
    kind, name = str(owners[0]["kind"]), str(owners[0]["name"])
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        return "Deployment", name[: -len(template_hash) - 1]
    return kind, name
