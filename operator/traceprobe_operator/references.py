"""Whether the Secrets a probe's export names exist and hold the keys it needs.

A probe is not accepted (so not deployed) until they do: the exporter would
otherwise connect without its credentials or CA. The checks read only a Secret's
key names, through `secret_keys`, which the caller backs with a GET.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from traceprobe_operator.validation import Problem

SecretKeys = Callable[[str, str], "frozenset[str] | None"]
"""(namespace, name) -> the Secret's keys, None when there is no such Secret; raises
SecretUnreadable when the operator may not read it (or the read failed)."""

CA_KEY, CERT_KEY, KEY_KEY = "ca.crt", "tls.crt", "tls.key"


class SecretUnreadable(Exception):
    """The Secret could not be read; the text says why (forbidden, unreachable, ...)."""


def secrets_namespace(kind: str, namespace: str | None, operator_namespace: str) -> str:
    """Where a probe's Secrets live: its own namespace; a ClusterTraceProbe's, the
    operator's (never another namespace: see traceprobe_api.probe.SecretKeysRef)."""
    return namespace if kind == "TraceProbe" and namespace else operator_namespace


def references(spec: Any) -> list[tuple[str, str]]:
    """(field, Secret name) of each Secret the spec names."""
    export = spec.get("export") if isinstance(spec, dict) else None
    if not isinstance(export, dict):
        return []
    found: list[tuple[str, str]] = []
    headers = export.get("headersSecretRef")
    if isinstance(headers, dict) and isinstance(headers.get("name"), str):
        found.append(("headersSecretRef", headers["name"]))
    tls = export.get("tls")
    secret = tls.get("secretRef") if isinstance(tls, dict) else None
    if isinstance(secret, dict) and isinstance(secret.get("name"), str):
        found.append(("tls.secretRef", secret["name"]))
    return found


def _missing_keys(field: str, export: dict[str, Any], keys: frozenset[str]) -> list[str]:
    if field == "headersSecretRef":
        wanted = export["headersSecretRef"].get("keys")
        if not wanted:  # every key becomes a header: at least one is needed
            return [] if keys else ["at all (every key would be a header)"]
        return [repr(k) for k in wanted if k not in keys]
    missing = [] if CA_KEY in keys or (export.get("tls") or {}).get("insecureSkipVerify") else [
        f"'{CA_KEY}' (the server's CA, needed unless insecureSkipVerify)"]
    if (CERT_KEY in keys) != (KEY_KEY in keys):  # a client certificate needs both halves
        missing.append(f"'{KEY_KEY if CERT_KEY in keys else CERT_KEY}' (a client "
                       "certificate needs tls.crt and tls.key)")
    return missing


_REASON = {"headersSecretRef": "ExportHeadersSecret", "tls.secretRef": "ExportTlsSecret"}


def reference_problem(spec: Any, namespace: str, secret_keys: SecretKeys) -> Problem | None:
    """The first Secret of the export that is missing, unreadable or short of a key."""
    for field, name in references(spec):
        where = f"spec.export.{field}.name"
        try:
            keys = secret_keys(namespace, name)
        except SecretUnreadable as exc:
            return Problem(f"{_REASON[field]}Unreadable",
                           f"{where}: cannot read Secret {namespace}/{name}: {exc}")
        if keys is None:
            return Problem(f"{_REASON[field]}NotFound",
                           f"{where}: Secret {namespace}/{name} does not exist")
        missing = _missing_keys(field, spec["export"], keys)
        if missing:
            keys_field = "spec.export.headersSecretRef.keys" if (
                field == "headersSecretRef" and spec["export"][field].get("keys")) else where
            return Problem(f"{_REASON[field]}KeyMissing",
                           f"{keys_field}: Secret {namespace}/{name} has no key "
                           f"{', '.join(missing)}")
    return None
