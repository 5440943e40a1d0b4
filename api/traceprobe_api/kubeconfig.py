"""How every component finds its API server: in a pod its ServiceAccount, else the
kubeconfig (KUBECONFIG or ~/.kube/config), as kubectl does."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException


class KubeconfigError(Exception):
    """No usable credentials; the message (one line) names the file or the
    ServiceAccount and says what is wrong."""

    def __init__(self, message: str) -> None:
        # File names and the client's messages may hold newlines: one line all the same.
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))


def _one_line(text: object) -> str:
    """An exception's text (YAML errors span lines) on one line."""
    return " ".join(str(text).split())


def _kubeconfig_files(kubeconfig: str | None) -> list[str]:
    paths = [kubeconfig] if kubeconfig is not None else (
        os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep)
    return [os.path.expanduser(p) for p in paths if p]


def _check_file(path: str) -> None:
    """Fail naming `path` when it cannot be a kubeconfig: the client's own errors for a
    file that is not YAML, or YAML that is not a mapping, name neither."""
    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except UnicodeDecodeError:
        raise KubeconfigError(f"kubeconfig {path}: not UTF-8 text") from None
    except OSError as exc:
        raise KubeconfigError(f"kubeconfig {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise KubeconfigError(f"kubeconfig {path}: not YAML{where} ({_one_line(problem)})"
                              ) from None
    if not isinstance(document, dict):
        what = "empty" if document is None else f"a YAML {type(document).__name__}"
        raise KubeconfigError(f"kubeconfig {path}: {what}, not a kubeconfig (apiVersion: "
                              "v1, kind: Config, clusters, users, contexts)")


def _check_server(api: client.ApiClient, where: str) -> client.ApiClient:
    host = str(api.configuration.host or "")
    parts = urlsplit(host)
    try:
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KubeconfigError(f"{where}: the server {host!r} is not an https:// URL")
    return api


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An API client for this process. An explicit `kubeconfig`/`context`, or a
    kubeconfig present on disk, wins over the pod's ServiceAccount. Nothing here
    contacts the API server: an unreachable one is the caller's to retry."""
    files = _kubeconfig_files(kubeconfig)
    present = [p for p in files if os.path.exists(p)]
    on_disk = kubeconfig is not None or "KUBECONFIG" in os.environ or bool(present)
    if not on_disk and "KUBERNETES_SERVICE_HOST" in os.environ:
        try:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
        except (ConfigException, OSError, ValueError) as exc:
            raise KubeconfigError(f"in-cluster ServiceAccount: {_one_line(exc)}") from exc
        return _check_server(client.ApiClient(configuration), "in-cluster ServiceAccount")
    where = f"kubeconfig {os.pathsep.join(files) or '~/.kube/config'}"
    if not present:
        looked = kubeconfig is not None or "KUBECONFIG" in os.environ
        raise KubeconfigError(f"{where}: no such file" + ("" if looked else (
            " (and no in-cluster ServiceAccount: KUBERNETES_SERVICE_HOST is not set)")))
    for path in present:
        _check_file(path)
    try:
        # KUBECONFIG may list several files; the client merges them like kubectl.
        api = config.new_client_from_config(config_file=os.pathsep.join(present),
                                            context=context)
    except (ConfigException, OSError, ValueError, TypeError, KeyError, AttributeError,
            yaml.YAMLError) as exc:
        raise KubeconfigError(f"{where}: {_one_line(exc)}") from exc
    return _check_server(api, where)
