"""Kubernetes objects behind a simulated pod: Node, owner chain, Pod and its status.

No kubelet or controller-manager runs, so the harness plays their part: it
creates the owner chain (Deployment → ReplicaSet, StatefulSet, DaemonSet,
CronJob → Job) itself and patches Pod status the way a kubelet would.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kubernetes.client.exceptions import ApiException

IMAGE = "traceprobe.invalid/simulated-pod:1"  # never pulled: no kubelet runs
OWNER_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def _template(labels: dict[str, str], restart: str = "Always") -> dict[str, Any]:
    return {"metadata": {"labels": labels}, "spec": {
        "restartPolicy": restart, "containers": [{"name": "main", "image": IMAGE}]}}


def _ref(obj: Any, kind: str, api_version: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": obj.metadata.name,
            "uid": obj.metadata.uid, "controller": True, "blockOwnerDeletion": True}


def _create_or_get(create: Any, read: Any, namespace: str, body: dict[str, Any]) -> Any:
    try:
        return create(namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        return read(body["metadata"]["name"], namespace)


class Objects:
    """Creates (idempotently) and deletes the API objects of simulated pods."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.created: list[tuple[str, str, str]] = []  # (kind, namespace, name)

    def ensure_namespace(self, name: str) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise

    def ensure_node(self, name: str, ip: str) -> None:
        try:
            self.core.create_node({"metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.core.patch_node_status(name, {"status": {
            "addresses": [{"type": "InternalIP", "address": ip},
                          {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "simulated node"}]}})

    def owner_refs(self, kind: str, workload: str, namespace: str,
                   labels: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Create the owner chain of `kind`; return the pod's ownerReferences and extra labels."""
        selector = {"matchLabels": labels}
        meta = {"name": workload, "labels": labels}
        if kind == "Deployment":
            dep = _create_or_get(self.apps.create_namespaced_deployment,
                                 self.apps.read_namespaced_deployment, namespace,
                                 {"metadata": meta, "spec": {"selector": selector,
                                                             "template": _template(labels)}})
            self._track("Deployment", namespace, workload)
            pth = hashlib.sha256(dep.metadata.uid.encode()).hexdigest()[:10]
            rs_labels = {**labels, "pod-template-hash": pth}
            rs = _create_or_get(self.apps.create_namespaced_replica_set,
                                self.apps.read_namespaced_replica_set, namespace, {
                "metadata": {"name": f"{workload}-{pth}", "labels": rs_labels,
                             "ownerReferences": [_ref(dep, "Deployment", "apps/v1")]},
                "spec": {"selector": {"matchLabels": rs_labels},
                         "template": _template(rs_labels)}})
            self._track("ReplicaSet", namespace, rs.metadata.name)
            return [_ref(rs, "ReplicaSet", "apps/v1")], {"pod-template-hash": pth}
        if kind in ("StatefulSet", "DaemonSet"):
            create = getattr(self.apps, f"create_namespaced_{_snake(kind)}")
            read = getattr(self.apps, f"read_namespaced_{_snake(kind)}")
            spec: dict[str, Any] = {"selector": selector, "template": _template(labels)}
            if kind == "StatefulSet":
                spec["serviceName"] = workload
            owner = _create_or_get(create, read, namespace, {"metadata": meta, "spec": spec})
            self._track(kind, namespace, workload)
            return [_ref(owner, kind, "apps/v1")], {}
        if kind in ("Job", "CronJob"):
            job_meta: dict[str, Any] = {"name": workload, "labels": labels}
            if kind == "CronJob":
                cron = _create_or_get(
                    self.batch.create_namespaced_cron_job, self.batch.read_namespaced_cron_job,
                    namespace, {"metadata": meta, "spec": {"schedule": "0 0 1 1 *",
                        "jobTemplate": {"spec": {"template": _template(labels, "Never")}}}})
                self._track("CronJob", namespace, workload)
                job_meta = {"name": f"{workload}-1", "labels": labels,
                            "ownerReferences": [_ref(cron, "CronJob", "batch/v1")]}
            job = _create_or_get(self.batch.create_namespaced_job,
                                 self.batch.read_namespaced_job, namespace,
                                 {"metadata": job_meta,
                                  "spec": {"template": _template(labels, "Never")}})
            self._track("Job", namespace, job.metadata.name)
            return [_ref(job, "Job", "batch/v1")], {}
        raise ValueError(f"owner kind {kind!r} not simulated; use one of {OWNER_KINDS} or None")

    def create_pod(self, name: str, namespace: str, node: str, labels: dict[str, str],
                   owner_refs: list[dict[str, Any]], host_network: bool) -> Any:
        pod = self.core.create_namespaced_pod(namespace, {
            "metadata": {"name": name, "labels": labels, "ownerReferences": owner_refs},
            "spec": {"nodeName": node, "hostNetwork": host_network,
                     "containers": [{"name": "main", "image": IMAGE}]}})
        self._track("Pod", namespace, name)
        return pod

    def mark_running(self, name: str, namespace: str, pod_ips: list[str], host_ip: str) -> None:
        self.core.patch_namespaced_pod_status(name, namespace, {"status": {
            "phase": "Running", "podIP": pod_ips[0], "podIPs": [{"ip": ip} for ip in pod_ips],
            "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
            "conditions": [{"type": "Ready", "status": "True"},
                           {"type": "ContainersReady", "status": "True"}]}})

    def _track(self, kind: str, namespace: str, name: str) -> None:
        if (kind, namespace, name) not in self.created:
            self.created.append((kind, namespace, name))

    def delete_all(self) -> None:
        """Delete what was created, newest first (no garbage collector runs here).

        Background propagation: "Orphan" would add a finalizer that only the
        absent garbage collector removes, leaving objects stuck in deletion.
        """
        for kind, namespace, name in reversed(self.created):
            api = {"Pod": self.core, "Job": self.batch, "CronJob": self.batch}.get(kind, self.apps)
            try:
                getattr(api, f"delete_namespaced_{_snake(kind)}")(
                    name, namespace, grace_period_seconds=0, propagation_policy="Background")
            except ApiException as exc:
                if exc.status != 404:
                    raise
        self.created.clear()


def _snake(kind: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind).lstrip("_")
