"""The operator's one door to the Kubernetes API (besides kopf's own watching).

Thin I/O: read probes; write the agent DaemonSet, probe status and the operator's
finalizer. Nodes and node reports come from kopf's indexes
(traceprobe_operator.indexes). Decisions live in the pure modules.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_api.kubeconfig import load_api_client
from traceprobe_api.resources import PROBE_PLURALS
from traceprobe_operator.agent_workload import CONFIG_HASH_ANNOTATION

#: Longest API error text carried into a condition, an Event or a log line.
MAX_ERROR_TEXT = 600


def describe(exc: BaseException) -> str:
    """One line for a failed request: the API server's own message when it gave one."""
    if isinstance(exc, ApiException):
        message = ""
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            message = str(json.loads(exc.body or "{}").get("message") or "")
        text = f"{exc.status} {exc.reason}: {message or exc.body or ''}".strip()
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."


def refused(exc: BaseException) -> bool:
    """The API server answered and refused (validation, admission, RBAC): asking again
    unchanged gets the same answer, so it is reported rather than retried hot."""
    return isinstance(exc, ApiException) and exc.status in (400, 403, 422)


class Kube:
    def __init__(self, api_client: Any | None = None) -> None:
        api_client = load_api_client() if api_client is None else api_client
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # --- reads -----------------------------------------------------------
    def list_probes(self) -> list[dict[str, Any]]:
        probes: list[dict[str, Any]] = []
        for kind, plural in PROBE_PLURALS.items():
            items = self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, plural)
            for item in items.get("items", []):
                item.setdefault("kind", kind)
                probes.append(item)
        return probes

    # --- writes ----------------------------------------------------------
    def _patch_probe(self, kind: str, namespace: str | None, name: str, body: Any,
                     dry_run: bool = False) -> None:
        plural = PROBE_PLURALS[kind]
        extra = {"dry_run": "All"} if dry_run else {}
        if namespace:
            self.custom.patch_namespaced_custom_object(API_GROUP, API_VERSION, namespace,
                                                       plural, name, body, **extra)
        else:
            self.custom.patch_cluster_custom_object(API_GROUP, API_VERSION, plural, name, body,
                                                    **extra)

    def set_finalizers(self, kind: str, namespace: str | None, name: str,
                       resource_version: str, finalizers: list[str],
                       dry_run: bool = False) -> None:
        """Replace the probe's finalizers, only if it is still at `resource_version`
        (409 otherwise); `dry_run` asks the API server whether it would allow it."""
        self._patch_probe(kind, namespace, name, {"metadata": {
            "resourceVersion": resource_version, "finalizers": finalizers}}, dry_run)

    def remove_annotations(self, kind: str, namespace: str | None, name: str,
                           keys: list[str]) -> None:
        self._patch_probe(kind, namespace, name,
                          {"metadata": {"annotations": dict.fromkeys(keys)}})

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
        """The probe, or None when it does not exist (or `kind` is no probe kind)."""
        plural = PROBE_PLURALS.get(kind)
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
        plural = PROBE_PLURALS[kind]
        for _ in range(5):
            obj = self.get_probe(kind, namespace, name)
            if obj is None:  # deleted meanwhile: nothing to report on
                return
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

