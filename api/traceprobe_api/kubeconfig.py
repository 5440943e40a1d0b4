"""How every component finds its API server: in a pod its ServiceAccount, else the
kubeconfig (KUBECONFIG or ~/.kube/config), as kubectl does."""

from __future__ import annotations

import os

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException


class KubeconfigError(Exception):
    """No usable credentials; the message says where the loader looked."""


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An API client for this process. An explicit `kubeconfig`/`context`, or a
    kubeconfig present on disk, wins over the pod's ServiceAccount."""
    try:
        on_disk = kubeconfig is not None or "KUBECONFIG" in os.environ or os.path.exists(
            os.path.expanduser("~/.kube/config"))
        if not on_disk and "KUBERNETES_SERVICE_HOST" in os.environ:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        # KUBECONFIG may list several files; the client merges them like kubectl.
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubeconfigError(
            f"cannot load Kubernetes credentials (no in-cluster ServiceAccount, "
            f"kubeconfig {where}): {exc}") from exc
