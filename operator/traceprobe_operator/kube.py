"""The operator's one door to the Kubernetes API (besides kopf's own watching).

Thin I/O: read probes, nodes and node reports; write the agent DaemonSet and
probe status. Decisions live in the pure modules.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_operator.agent_workload import CONFIG_HASH_ANNOTATION

PLURALS = {"TraceProbe": "traceprobes", "ClusterTraceProbe": "clustertraceprobes"}
NODE_REPORTS = "nodereports"


class Kube:
    def __init__(self, api_client: Any | None = None) -> None:
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # --- reads -----------------------------------------------------------
    def list_probes(self) -> list[dict[str, Any]]:
        probes: list[dict[str, Any]] = []
        for kind, plural in PLURALS.items():
            items = self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, plural)
            for item in items.get("items", []):
                item.setdefault("kind", kind)
                probes.append(item)
        return probes

    def list_nodes(self) -> list[tuple[str, dict[str, str]]]:
        return [(n.metadata.name, dict(n.metadata.labels or {}))
                for n in self.core.list_node().items]

    def list_node_reports(self) -> list[dict[str, Any]]:
        result = self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, NODE_REPORTS)
        return list(result.get("items", []))

    # --- writes ----------------------------------------------------------
    def apply_daemonset(self, manifest: dict[str, Any]) -> str:
        """Create or replace the agent DaemonSet; return created/updated/unchanged."""
        meta = manifest["metadata"]
        want = manifest["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        try:
            current = self.apps.read_namespaced_daemon_set(meta["name"], meta["namespace"])
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.apps.create_namespaced_daemon_set(meta["namespace"], manifest)
            return "created"
        annotations = current.spec.template.metadata.annotations or {}
        if annotations.get(CONFIG_HASH_ANNOTATION) == want:
            return "unchanged"
        body = {**manifest, "metadata": {**meta,
                                         "resourceVersion": current.metadata.resource_version}}
        self.apps.replace_namespaced_daemon_set(meta["name"], meta["namespace"], body)
        return "updated"

    def delete_daemonset(self, name: str, namespace: str) -> bool:
        try:
            self.apps.delete_namespaced_daemon_set(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def get_probe(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        plural = PLURALS.get(kind)
        if plural is None:
            return None
        try:
            obj = (self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, plural, name) if namespace else
                self.custom.get_cluster_custom_object(API_GROUP, API_VERSION, plural, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(obj)

    def update_probe_status(self, kind: str, namespace: str | None, name: str,
                            mutate: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Read-modify-write of a probe's status with optimistic concurrency.

        Handlers and the status timer run concurrently; each rewrites the
        conditions list, so each must start from the stored one, and a write
        based on a stale read is refused (409) and redone.
        """
        plural = PLURALS[kind]
        for _ in range(5):
            try:
                obj = (self.custom.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, plural, name) if namespace else
                    self.custom.get_cluster_custom_object(API_GROUP, API_VERSION, plural, name))
            except ApiException as exc:
                if exc.status == 404:  # deleted meanwhile: nothing to report on
                    return
                raise
            current = dict(obj.get("status") or {})
            wanted = mutate(dict(current))
            if wanted == current:
                return
            body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                    "status": wanted}
            try:
                if namespace:
                    self.custom.patch_namespaced_custom_object_status(
                        API_GROUP, API_VERSION, namespace, plural, name, body)
                else:
                    self.custom.patch_cluster_custom_object_status(
                        API_GROUP, API_VERSION, plural, name, body)
                return
            except ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise
        raise RuntimeError(f"status of {kind} {namespace or ''}/{name} kept changing; "
                           "will retry on the next event")


def age_seconds(timestamp: str | None, now: datetime | None = None) -> float:
    """Seconds since an RFC 3339 timestamp; infinity when there is none."""
    if not timestamp:
        return float("inf")
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return ((now or datetime.now(UTC)) - then).total_seconds()
