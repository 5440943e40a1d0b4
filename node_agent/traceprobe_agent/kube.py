"""The agent's only Kubernetes I/O (an import-linter contract keeps it so): watch the
probes, this node's pods and the namespaces' labels, read this node's labels, write
its NodeReport, and review the tokens of /metrics scrapers (TokenReview, SubjectAccessReview).

Objects reach callers as plain JSON dicts, never client models, so everything
that decides what to do with them stays pure and testable without an API server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_api.backoff import Backoff
from traceprobe_api.base import ObjectMeta
from traceprobe_api.kubeconfig import KubeconfigError as KubeconfigError  # for the agent
from traceprobe_api.kubeconfig import load_api_client
from traceprobe_api.node_report import NodeReport, NodeReportSpec, NodeReportStatus
from traceprobe_api.resources import NODE_REPORTS, PROBE_PLURALS

# What an API server that is away looks like: the agent keeps running on its caches.
API_ERRORS = (ApiException, OSError, HTTPError)
# (connect, read) seconds: a list of a node's pods is small; a watch the server ends at
# 60 s sends nothing while nothing changes, so its read waits a little longer.
LIST_TIMEOUT, WATCH_TIMEOUT = (10, 30), (10, 90)

log = logging.getLogger("traceprobe.agent")
OnList = Callable[[list[dict[str, Any]]], None]
OnEvent = Callable[[str, dict[str, Any]], None]


def _short(exc: BaseException) -> str:
    """urllib3 wraps the cause in its connection's repr; the cause's words say it."""
    text = " ".join(str(getattr(exc, "reason", None) or exc).split())
    if text.startswith(("HTTPConnection(", "HTTPSConnection(")) and "): " in text:
        return text.split("): ", 1)[1]
    return text or type(exc).__name__


class NodeApi:
    """The API calls of one node's agent."""

    def __init__(self, node: str, api: client.ApiClient | None = None) -> None:
        self.node = node
        api = api or load_api_client()
        self.server = str(api.configuration.host)
        self._version = client.VersionApi(api)
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._authn = client.AuthenticationV1Api(api)
        self._authz = client.AuthorizationV1Api(api)
        self._plain = api.sanitize_for_serialization

    def _list_then_watch(self, what: str, list_fn: Callable[..., Any], args: tuple[Any, ...],
                         kwargs: dict[str, Any], on_list: OnList, on_event: OnEvent,
                         stop: threading.Event) -> None:
        """List, then watch from that version; on any failure keep the last view
        (the API server may be away: the agent runs on) and start over with backoff.
        Every request has a read timeout (the server ends a watch at 60 s), so a
        connection that went quiet fails and is retried instead of hanging."""
        backoff = Backoff(1.0, 30.0, jitter=0.5)
        while not stop.is_set():
            try:
                listing = self._plain(list_fn(*args, _request_timeout=LIST_TIMEOUT, **kwargs))
                on_list(listing.get("items") or [])
                backoff.succeeded()
                stream = watch.Watch().stream(
                    list_fn, *args, resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=60, _request_timeout=WATCH_TIMEOUT, **kwargs)
                for event in stream:
                    on_event(event["type"], event["raw_object"])
                    if stop.is_set():
                        return
            except (*API_ERRORS, ValueError, KeyError) as exc:
                delay = backoff.failed()
                log.warning("watching %s failed (%s); retrying in %.1fs", what, exc, delay)
                stop.wait(delay)
            except Exception:  # anything else: said in full, retried all the same
                delay = backoff.failed()
                log.exception("watching %s failed unexpectedly; retrying in %.1fs", what, delay)
                stop.wait(delay)

    def watch_probes(self, kind: str, on_list: OnList, on_event: OnEvent,
                     stop: threading.Event) -> None:
        """Every probe of `kind` (TraceProbe or ClusterTraceProbe), until `stop`."""
        plural = PROBE_PLURALS[kind]
        self._list_then_watch(plural, self._custom.list_cluster_custom_object,
                              (API_GROUP, API_VERSION, plural), {}, on_list, on_event, stop)

    def watch_pods(self, on_list: OnList, on_event: OnEvent, stop: threading.Event) -> None:
        """This node's pods only (field selector): an agent names only local sides."""
        self._list_then_watch(
            f"pods of {self.node}", self._core.list_pod_for_all_namespaces, (),
            {"field_selector": f"spec.nodeName={self.node}"}, on_list, on_event, stop)

    def watch_namespaces(self, on_list: OnList, on_event: OnEvent,
                         stop: threading.Event) -> None:
        """Every namespace, for its labels (a ClusterTraceProbe's namespaceSelector)."""
        self._list_then_watch("namespaces", self._core.list_namespace, (), {}, on_list,
                              on_event, stop)

    def unreachable(self) -> str | None:
        """Why the API server cannot serve the agent now, in a few words (no answer,
        a server error, credentials refused), or None when it answers."""
        try:
            self._version.get_code(_request_timeout=10)
        except ApiException as exc:  # 403 (no /version for this user) still answers
            if not exc.status or exc.status == 401 or exc.status >= 500:
                return f"HTTP {exc.status} {exc.reason}" if exc.status else str(exc.reason)
        except (OSError, HTTPError) as exc:
            return _short(exc)
        return None

    def node_labels(self) -> dict[str, str]:
        return dict(self._core.read_node(self.node).metadata.labels or {})

    def write_report(self, status: NodeReportStatus) -> None:
        """Create this node's NodeReport if it is new, then replace its status."""
        body = NodeReport(metadata=ObjectMeta(name=self.node),
                          spec=NodeReportSpec(node_name=self.node))
        try:
            self._custom.create_cluster_custom_object(API_GROUP, API_VERSION, NODE_REPORTS,
                                                      body.to_dict())
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._custom.patch_cluster_custom_object_status(
            API_GROUP, API_VERSION, NODE_REPORTS, self.node, {"status": status.to_dict()})

    # --- /metrics scrapers (traceprobe_agent.metrics_auth.Reviews) -----------------
    def review_token(self, token: str) -> dict[str, Any] | None:
        """The token's user as the API server sees it, or None if it is not accepted."""
        review = self._plain(self._authn.create_token_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
             "spec": {"token": token}}))
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return None
        return dict(status.get("user") or {})

    def may(self, user: dict[str, Any], verb: str, path: str) -> bool:
        """Whether `user` (from review_token) may `verb` the non-resource URL `path`."""
        spec: dict[str, Any] = {"user": user.get("username", ""),
                                "groups": list(user.get("groups") or []),
                                "nonResourceAttributes": {"path": path, "verb": verb}}
        if user.get("uid"):
            spec["uid"] = user["uid"]
        if user.get("extra"):
            spec["extra"] = user["extra"]
        review = self._plain(self._authz.create_subject_access_review(
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
             "spec": spec}))
        return bool((review.get("status") or {}).get("allowed"))
