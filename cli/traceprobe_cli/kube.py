"""The CLI's only door to Kubernetes: kubeconfig loading, the service proxy, custom objects.

A kubeconfig that cannot be used is bad input (`UsageError`, exit 2); a request that
fails is `KubeError` (exit 1). Both carry one line that says what failed and what to
check.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_api.kubeconfig import KubeconfigError, load_api_client
from traceprobe_cli.settings import CliSettings, UsageError

DEFAULT_KUBECONFIG = "~/.kube/config"
RETRY_AFTER_RETRIES = 3
"""Retry-After answers are retried this often (each wait is what the server asks)."""


class KubeError(Exception):
    """A request that failed; the message says what and what to check (no traceback)."""


def one_line(text: str, limit: int = 300) -> str:
    """Library messages span lines (YAML marks, Go errors): one line, bounded."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _body_message(body: bytes | str | None) -> str:
    """The `message` of a JSON error body (the API server's Status, or the map's own)."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body or ""
    try:
        parsed = json.loads(text or "{}")
    except ValueError:
        return one_line(text)
    message = parsed.get("message") if isinstance(parsed, dict) else None
    return one_line(str(message)) if message else one_line(text)


def _transport_reason(exc: BaseException, timeout: float) -> str:
    """Why no answer came: the innermost cause, named as a person would."""
    while isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.NameResolutionError):
        return "its host name does not resolve"
    # Before the timeouts: urllib3 makes a failed connect a ConnectTimeoutError too.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "connection refused" if "refused" in str(exc) else one_line(
            str(exc).rpartition("]")[2].strip() or str(exc), 200)
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return f"no answer within {timeout:g}s (--request-timeout)"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return f"TLS failed ({one_line(str(exc), 160)}); check the kubeconfig's" \
               " certificate-authority"
    text = str(exc)
    if isinstance(exc, ConnectionRefusedError) or "Connection refused" in text or (
            isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED):
        return "connection refused"
    return one_line(text, 200)


class Cluster:
    """One API server, as the kubeconfig (and `--context`) names it."""

    def __init__(self, api: client.ApiClient, timeout: float = 10.0) -> None:
        self.api = api
        self.timeout = timeout
        self.server = str(api.configuration.host)

    @classmethod
    def connect(cls, settings: CliSettings) -> Cluster:
        """The cluster the settings name; UsageError when the kubeconfig is unusable."""
        _require_files(settings)
        try:
            loaded = load_api_client(settings.kubeconfig, settings.context)
        except KubeconfigError as exc:
            raise _unusable(settings, exc) from None
        configuration = loaded.configuration
        # One connection attempt per request, so an unreachable server fails within
        # --request-timeout rather than after three more tries; but, as kubectl does,
        # a few retries of an answer that says when to retry (429 or 5xx with
        # Retry-After, e.g. while a new CRD's storage starts).
        configuration.retries = urllib3.util.Retry(total=RETRY_AFTER_RETRIES, connect=0,
                                                   read=0, other=0, status=0)
        configuration.client_go_retries = True
        return cls(client.ApiClient(configuration), settings.request_timeout)

    def _unreachable(self, what: str, exc: BaseException) -> KubeError:
        return KubeError(f"{what}: cannot reach the API server {self.server}:"
                         f" {_transport_reason(exc, self.timeout)}; check that it is up and"
                         " that the kubeconfig's context (--kubeconfig, --context) points at it")

    def _refused(self, what: str, status: int, reason: str, message: str, rbac: str,
                 unavailable: str = "") -> KubeError:
        if status == 0:  # the client's own wrapping of a TLS failure
            return self._unreachable(what, urllib3.exceptions.SSLError(reason))
        detail = f"{what}: {status} {reason}" + (f" ({message})" if message else "")
        if status == 401:
            return KubeError(f"{detail}; the API server did not accept the kubeconfig's"
                             " credentials: check that its token or certificate is current")
        if status == 403:
            return KubeError(f"{detail}; check RBAC: your user needs {rbac}")
        return KubeError(detail + (unavailable if status in (502, 503, 504) else ""))

    def service_proxy_get(self, namespace: str, service: str, port: str, path: str,
                          params: dict[str, str] | None = None) -> bytes:
        """GET `path` from a Service through the API server's proxy (RBAC: services/proxy)."""
        resource = (f"/api/v1/namespaces/{quote(namespace, safe='')}/services/"
                    f"{quote(service, safe='')}:{quote(port, safe='')}/proxy/"
                    f"{path.lstrip('/')}")
        what = f"GET {path} from service {namespace}/{service}:{port}"
        rbac = f"get on services/proxy in namespace {namespace}"
        unavailable = ("; is the service map running? check its pods and Service endpoints"
                       f" in namespace {namespace}")
        try:
            method, url, headers, _, _ = self.api.param_serialize(
                "GET", resource, header_params={"Accept": "*/*"}, auth_settings=["BearerToken"])
            if params:
                url += "?" + urlencode(params)
            response = self.api.call_api(method, url, headers,
                                         _request_timeout=self.timeout)
            data: bytes = response.read()
        except ApiException as exc:
            raise self._refused(what, exc.status or 0, str(exc.reason), _body_message(exc.body),
                                rbac, unavailable) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise self._unreachable(what, exc) from exc
        if response.status < 400:
            return data
        status: dict[str, Any] = {}
        try:
            parsed = json.loads(data)
            status = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            pass
        if response.status == 404 and status.get("kind") == "Status":  # the API server's 404
            raise KubeError(f"{what}: {one_line(str(status.get('message', 'not found')))} (is"
                            f" the service map installed in namespace {namespace}? see"
                            " -n/--namespace and --map-service)")
        message = _body_message(data)
        raise self._refused(what, response.status, str(response.reason), message, rbac,
                            unavailable)

    def list_objects(self, plural: str) -> list[dict[str, Any]]:
        """Every traceprobe.io object of a kind, in all namespaces the user may list."""
        api = client.CustomObjectsApi(self.api)
        what = f"list {plural}.{API_GROUP}"
        try:
            listing = api.list_cluster_custom_object(API_GROUP, API_VERSION, plural,
                                                     _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                raise KubeError(f"{what}: not a resource of this cluster (are traceprobe's"
                                " CRDs installed? kubectl get crd | grep traceprobe.io)") from exc
            raise self._refused(what, exc.status or 0, str(exc.reason), _body_message(exc.body),
                                f"list on {plural}.{API_GROUP} at the cluster scope") from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise self._unreachable(what, exc) from exc
        if not isinstance(listing, dict) or not isinstance(listing.get("items"), list):
            raise KubeError(f"{what}: the API server's answer has no list of items")
        items: list[dict[str, Any]] = listing["items"]
        return items


# --- an unusable kubeconfig ---------------------------------------------------------

def _require_files(settings: CliSettings) -> None:
    # Checked before loading: the client's own word for a missing file is "No
    # configuration found", which does not say which file or why.
    source = settings.kubeconfig_source
    if source is None:
        return
    name, value = source
    paths = [os.path.expanduser(p) for p in
             ([value] if name != "KUBECONFIG" else value.split(os.pathsep)) if p]
    if not any(os.path.isfile(p) for p in paths):
        what = "no such file" if len(paths) == 1 else "none of these files exists"
        raise UsageError(f"{name} {value!r}: {what}; expected a readable kubeconfig (YAML)")


def _unusable(settings: CliSettings, exc: KubeconfigError) -> UsageError:
    # The shared loader's line starts with the file it read; the source is named here.
    text = str(exc)
    cause = one_line(text.split(": ", 1)[1] if text.startswith("kubeconfig ") and ": " in text
                     else text)
    source = settings.kubeconfig_source
    if text.startswith("in-cluster"):  # no kubeconfig at all, and a pod's is broken
        return UsageError(f"{cause}; pass --kubeconfig FILE or set KUBECONFIG")
    if source is None and not os.path.exists(os.path.expanduser(DEFAULT_KUBECONFIG)):
        return UsageError(f"no kubeconfig: {DEFAULT_KUBECONFIG} does not exist, KUBECONFIG is"
                          " not set and this is no pod with a ServiceAccount; pass"
                          " --kubeconfig FILE or set KUBECONFIG")
    if settings.context is not None:
        try:
            contexts, _ = config.list_kube_config_contexts(config_file=settings.kubeconfig)
            names = sorted(str(c.get("name")) for c in contexts or [])
        except Exception:  # unreadable too: the content is the problem, said below
            names = None
        if names is not None and settings.context not in names:
            return UsageError(f"--context {settings.context!r}: no such context in the"
                              f" kubeconfig; expected one of: {', '.join(names) or '(none)'}")
    if source is None:
        return UsageError(f"kubeconfig {DEFAULT_KUBECONFIG} (the default; see --kubeconfig and"
                          f" KUBECONFIG) is not usable: {cause}")
    name, value = source
    return UsageError(f"{name} {value!r}: {cause}; expected a readable kubeconfig (YAML)")
