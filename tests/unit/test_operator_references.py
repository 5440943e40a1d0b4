"""What a probe's export must get right beyond the schema: an endpoint an exporter
can use, and Secrets that exist with the keys it needs (pure: lookups are faked)."""

from __future__ import annotations

from typing import Any

import pytest

from traceprobe_operator.references import SecretUnreadable, reference_problem, secrets_namespace
from traceprobe_operator.validation import endpoint_problem, probe_problem


@pytest.mark.parametrize("endpoint,why", [
    ("https://otlp.example.com:4318", None),
    ("http://collector.monitoring.svc:4317", None),
    ("https://[fd00::1]:4317/v1/traces", None),
    ("https://otlp.example.com:70000", "port is outside 1-65535"),
    ("https://otlp.example.com:0", "port is outside 1-65535"),
    ("https://otlp.example.com:http", "port is not a number"),
    ("https://user:secret@otlp.example.com", "carries credentials"),
    ("https://token@otlp.example.com", "carries credentials"),
    ("https://otlp.example.com/#frag", "#fragment"),
    ("https://otlp exa.com", "spaces or control characters"),
    ("https://[fd00::1", "is not a URL"),
    ("https://300.1.1.1:4317", "looks like an IPv4 address"),
    ("https://-bad-.example.com", "neither a DNS name nor an IP address"),
    ("ftp://otlp.example.com", "http:// or https://"),
])
def test_an_endpoint_that_cannot_work_is_named_without_repeating_it(
        endpoint: str, why: str | None) -> None:
    problem = endpoint_problem(endpoint)
    if why is None:
        assert problem is None
        return
    assert problem is not None and why in problem
    assert "secret" not in problem  # the URL (and any password in it) is never echoed


def test_an_invalid_endpoint_is_its_own_reason_naming_the_field() -> None:
    body = {"spec": {"export": {"endpoint": "https://a:b@otlp.example.com:4317"}}}
    problem = probe_problem("TraceProbe", body)
    assert problem is not None and problem.reason == "ExportEndpointInvalid"
    assert problem.message.startswith("spec.export.endpoint: ")
    assert probe_problem("TraceProbe", {"spec": {"interval": "1y"}}).reason == "InvalidSpec"  # type: ignore[union-attr]


SECRETS: dict[tuple[str, str], frozenset[str] | None] = {
    ("shop", "headers"): frozenset({"authorization", "x-tenant"}),
    ("shop", "empty"): frozenset(),
    ("shop", "ca"): frozenset({"ca.crt"}),
    ("shop", "half-cert"): frozenset({"ca.crt", "tls.crt"}),
    ("shop", "client"): frozenset({"ca.crt", "tls.crt", "tls.key"}),
}


def lookup(namespace: str, name: str) -> frozenset[str] | None:
    if name == "forbidden":
        raise SecretUnreadable("403 Forbidden: secrets \"forbidden\" is forbidden")
    return SECRETS.get((namespace, name))


def spec(headers: dict[str, Any] | None = None, tls: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    export: dict[str, Any] = {"endpoint": "https://otlp.example.com:4318"}
    if headers is not None:
        export["headersSecretRef"] = headers
    if tls is not None:
        export["tls"] = tls
    return {"export": export}


@pytest.mark.parametrize("given,reason,field", [
    (spec(), None, None),
    (spec({"name": "headers", "keys": ["authorization"]}, {"secretRef": {"name": "ca"}}),
     None, None),
    (spec({"name": "headers"}), None, None),
    (spec(tls={"secretRef": {"name": "client"}}), None, None),
    (spec(tls={"secretRef": {"name": "missing"}, "insecureSkipVerify": True}),
     "ExportTlsSecretNotFound", "spec.export.tls.secretRef.name"),
    (spec({"name": "missing"}), "ExportHeadersSecretNotFound",
     "spec.export.headersSecretRef.name"),
    (spec({"name": "headers", "keys": ["authorization", "x-api-key"]}),
     "ExportHeadersSecretKeyMissing", "spec.export.headersSecretRef.keys"),
    (spec({"name": "empty"}), "ExportHeadersSecretKeyMissing",
     "spec.export.headersSecretRef.name"),
    (spec(tls={"secretRef": {"name": "headers"}}), "ExportTlsSecretKeyMissing",
     "spec.export.tls.secretRef.name"),
    (spec(tls={"secretRef": {"name": "half-cert"}}), "ExportTlsSecretKeyMissing",
     "spec.export.tls.secretRef.name"),
    (spec({"name": "forbidden"}), "ExportHeadersSecretUnreadable",
     "spec.export.headersSecretRef.name"),
])
def test_each_secret_reference_resolves_or_names_its_field(
        given: dict[str, Any], reason: str | None, field: str | None) -> None:
    problem = reference_problem(given, "shop", lookup)
    if reason is None:
        assert problem is None
        return
    assert problem is not None and problem.reason == reason
    assert problem.message.startswith(f"{field}: ")


def test_the_missing_key_is_named_and_insecure_skip_verify_needs_no_ca() -> None:
    problem = reference_problem(spec({"name": "headers", "keys": ["x-api-key"]}), "shop", lookup)
    assert problem is not None and "'x-api-key'" in problem.message
    half = reference_problem(spec(tls={"secretRef": {"name": "half-cert"}}), "shop", lookup)
    assert half is not None and "'tls.key'" in half.message
    assert reference_problem(spec(tls={"secretRef": {"name": "empty"},
                                       "insecureSkipVerify": True}), "shop", lookup) is None


def test_a_cluster_probes_secrets_live_in_the_operators_namespace() -> None:
    assert secrets_namespace("TraceProbe", "shop", "traceprobe-system") == "shop"
    assert secrets_namespace("ClusterTraceProbe", None, "traceprobe-system") == (
        "traceprobe-system")
