"""`python -m traceprobe_map`'s good inputs: good flags and environment variables (the
OTLP exporter's among them), run as the real program, start it and it serves; the chart's
own arguments for the service map are accepted by its settings."""

from __future__ import annotations

from typing import Any

import pytest

from harness.chart import NON_DEFAULT, container, env_of, render
from harness.map_program import BASE, GRPC, HTTP, TLS, E, fill, get_status, make_pem, started
from traceprobe_map.settings import CLUSTER_NAME_ENV, UsageError, load


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_pem(tmp_path_factory.mktemp("pem"))


GOOD: list[tuple[str, list[str], dict[str, str]]] = [
    ("defaults", [], {}),
    ("every-flag", ["--cluster-name", "prod-eu_1.a", "--bucket-seconds", "1",
                    "--window-seconds", "60", "--lateness-seconds", "0",
                    "--export-interval", "0.5", "--service-graph", "--max-edges", "1",
                    "--max-external", "10000000", "--verbose"], {}),
    ("cluster-from-env", [], {CLUSTER_NAME_ENV: "from-env"}),
    ("ingest-tls", ["--ingest-tls-cert", "{cert}", "--ingest-tls-key", "{key}"], {}),
    ("grpc-plaintext", [], {**GRPC, f"{E}INSECURE": "true", f"{E}TIMEOUT": "1.5",
                            f"{E}COMPRESSION": "GZIP", f"{E}HEADERS": "x-tenant=t1, a=b%20c",
                            f"{E}METRICS_TEMPORALITY_PREFERENCE": "delta",
                            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                            "OTEL_METRIC_EXPORT_TIMEOUT": "5000",
                            "OTEL_RESOURCE_ATTRIBUTES": "team=net,env=dev",
                            "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES":
                                "unavailable,DEADLINE_EXCEEDED"}),
    ("grpc-bare-host-port", [], {f"{E}ENDPOINT": "localhost:4317", f"{E}INSECURE": "TRUE"}),
    ("grpc-https-default-port", [], {f"{E}ENDPOINT": "https://otlp.example.com"}),
    ("grpc-mtls", [], {**TLS, f"{E}CERTIFICATE": "{ca}", f"{E}CLIENT_KEY": "{client_key}",
                       f"{E}CLIENT_CERTIFICATE": "{client}", f"{E}INSECURE": "false"}),
    ("grpc-metrics-level-mtls", [], {
        f"{E}METRICS_ENDPOINT": "https://[::1]:4317", f"{E}METRICS_CERTIFICATE": "{ca}",
        f"{E}METRICS_CLIENT_KEY": "{client_key}", f"{E}METRICS_CLIENT_CERTIFICATE": "{client}"}),
    ("http-mtls", [], {**HTTP, f"{E}CERTIFICATE": "{ca}", f"{E}CLIENT_KEY": "{client_key}",
                       f"{E}CLIENT_CERTIFICATE": "{client}", f"{E}COMPRESSION": "none",
                       f"{E}HEADERS": "authorization=Bearer abc"}),
    ("http-metrics-endpoint-path", [], {f"{E}METRICS_ENDPOINT": "http://h:4318/v1/metrics?x=1",
                                        f"{E}METRICS_PROTOCOL": "http/protobuf",
                                        f"{E}METRICS_COMPRESSION": "deflate"}),
    ("sdk-disabled", [], {**GRPC, "OTEL_SDK_DISABLED": "TRUE"}),
    ("otel-ignored-without-endpoint", [], {f"{E}TIMEOUT": "junk"}),
]


@pytest.mark.parametrize(("args", "env"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_good_values_start_and_serve(args: list[str], env: dict[str, str],
                                     pem: dict[str, str]) -> None:
    with started([*BASE, *(fill(a, pem) for a in args)],
                 {k: fill(v, pem) for k, v in env.items()}) as (ready, _):
        assert get_status(ready["httpPort"], "/healthz") == 200
        assert ready["ingestPort"] > 0


@pytest.mark.parametrize("values", [None, NON_DEFAULT, {
    "serviceMap": {"export": {"endpoint": "http://otel-collector.monitoring:4317"}}}],
    ids=["defaults", "non-default", "grpc-export"])
def test_the_charts_service_map_arguments_are_accepted(values: dict[str, Any] | None,
                                                       pem: dict[str, str]) -> None:
    docs = render(values)
    (name,) = [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"
               and d["metadata"]["name"].endswith("service-map")]
    spec = container(docs, name)
    # What the pod's Secrets and mounts provide, stood in for here.
    env = {k: (pem["ca"] if k.endswith("CERTIFICATE") else v) if isinstance(v, str)
           else "api-key=abc" for k, v in env_of(spec).items()}
    mounted = {"/etc/traceprobe/ingest-tls/tls.crt": pem["cert"],
               "/etc/traceprobe/ingest-tls/tls.key": pem["key"]}
    args = [a.split("=", 1)[0] + "=" + mounted[a.split("=", 1)[1]]
            if "=" in a and a.split("=", 1)[1] in mounted else a for a in spec["args"]]
    try:
        settings = load(args, env)
    except UsageError as exc:
        pytest.fail(f"the chart's arguments are refused: {exc}")
    assert settings.ingest_tls_cert is not None and settings.agent_service_account
    assert settings.cluster_name == (values or {}).get("clusterName", settings.cluster_name)
