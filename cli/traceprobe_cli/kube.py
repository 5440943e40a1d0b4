"""The CLI's only door to Kubernetes: kubeconfig loading, the service proxy, custom objects."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_api.kubeconfig import KubeconfigError, load_api_client


class KubeError(Exception):
    """Something the user can act on; the message says what (no traceback needed)."""


def _explain(exc: ApiException, what: str) -> KubeError:
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
    detail = ""
    try:
        detail = json.loads(body or "{}").get("message", "")
    except (ValueError, AttributeError):
        detail = (body or "").strip()[:300]
    return KubeError(f"{what}: {exc.status} {exc.reason}" + (f" ({detail})" if detail else ""))


def _status_of(data: bytes) -> dict[str, Any]:
    """A JSON error body (the API server's Status, or the map's own), or {}."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class Cluster:
    """One API server, as the kubeconfig (and `--context`) names it."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 timeout: float = 10.0) -> None:
        self.timeout = timeout
        try:
            self.api = load_api_client(kubeconfig, context)
        except KubeconfigError as exc:
            raise KubeError(str(exc)) from exc

    def service_proxy_get(self, namespace: str, service: str, port: str, path: str,
                          params: dict[str, str] | None = None) -> bytes:
        """GET `path` from a Service through the API server's proxy (RBAC: services/proxy)."""
        resource = (f"/api/v1/namespaces/{quote(namespace, safe='')}/services/"
                    f"{quote(service, safe='')}:{quote(port, safe='')}/proxy/"
                    f"{path.lstrip('/')}")
        what = f"GET {path} from service {namespace}/{service}:{port}"
        try:
            method, url, headers, _, _ = self.api.param_serialize(
                "GET", resource, header_params={"Accept": "*/*"}, auth_settings=["BearerToken"])
            if params:
                url += "?" + urlencode(params)
            response = self.api.call_api(method, url, headers,
                                         _request_timeout=self.timeout)
            data: bytes = response.read()
        except ApiException as exc:
            raise _explain(exc, what) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(f"{what}: cannot reach the API server: {exc}") from exc
        if response.status < 400:
            return data
        status = _status_of(data)
        if response.status == 404 and status.get("kind") == "Status":  # the API server's 404
            raise KubeError(f"{what}: {status.get('message', 'not found')} (is the service map"
                            f" installed in namespace {namespace}? see -n/--namespace and"
                            " --map-service)")
        message = status.get("message") or data.decode(errors="replace").strip()[:300]
        hint = " (is the service map running?)" if response.status == 503 else ""
        raise KubeError(f"{what}: {response.status} {response.reason}: {message}{hint}")

    def list_objects(self, plural: str) -> list[dict[str, Any]]:
        """Every traceprobe.io object of a kind, in all namespaces the user may list."""
        api = client.CustomObjectsApi(self.api)
        try:
            listing = api.list_cluster_custom_object(API_GROUP, API_VERSION, plural,
                                                     _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                raise KubeError(f"{plural}.{API_GROUP} is not a resource of this cluster"
                                " (are traceprobe's CRDs installed?)") from exc
            raise _explain(exc, f"list {plural}.{API_GROUP}") from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(f"list {plural}: cannot reach the API server: {exc}") from exc
        items: list[dict[str, Any]] = listing.get("items", [])
        return items
