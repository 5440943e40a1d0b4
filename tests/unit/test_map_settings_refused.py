"""`python -m traceprobe_map`'s bad inputs, run as the real program: every flag and every
environment variable it reads refused by name when bad (one line, exit 2, no traceback,
no secret repeated), and every flag and variable has bad cases here."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.map_program import BASE, GRPC, HTTP, TLS, E, fill, make_pem, run
from traceprobe_map.otlp_settings import OtlpSettings
from traceprobe_map.settings import CLUSTER_NAME_ENV, MapSettings


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_pem(tmp_path_factory.mktemp("pem"))


# (id, flags after BASE, environment, the name the one line must carry). Values in
# {braces} are filled from the `pem` fixture.
BAD: list[tuple[str, list[str], dict[str, str], str]] = [
    ("cluster-space", ["--cluster-name", "a b"], {}, "--cluster-name"),
    ("cluster-long", ["--cluster-name", "x" * 254], {}, "--cluster-name"),
    ("cluster-slash", ["--cluster-name", "prod/eu"], {}, "--cluster-name"),
    ("cluster-env", [], {CLUSTER_NAME_ENV: "a b"}, CLUSTER_NAME_ENV),
    ("cluster-env-empty", [], {CLUSTER_NAME_ENV: ""}, CLUSTER_NAME_ENV),
    ("ingest-no-port", ["--ingest-address", "nope"], {}, "--ingest-address"),
    ("ingest-port-range", ["--ingest-address", "0.0.0.0:99999"], {}, "--ingest-address"),
    ("ingest-port-negative", ["--ingest-address", "0.0.0.0:-1"], {}, "--ingest-address"),
    ("ingest-v6-brackets", ["--ingest-address", "[::1:80"], {}, "--ingest-address"),
    ("ingest-v6-bare", ["--ingest-address", "::1:80"], {}, "--ingest-address"),
    ("ingest-no-host", ["--ingest-address", ":80"], {}, "--ingest-address"),
    ("ingest-host-space", ["--ingest-address", "a b:80"], {}, "--ingest-address"),
    ("ingest-unresolvable", ["--ingest-address", "nosuchhost.invalid:0"], {},
     "--ingest-address"),
    ("tls-cert-missing", ["--ingest-tls-cert", "{missing}", "--ingest-tls-key", "{key}"], {},
     "--ingest-tls-cert"),
    ("tls-cert-alone", ["--ingest-tls-cert", "{cert}"], {}, "--ingest-tls-cert"),
    ("tls-cert-garbage", ["--ingest-tls-cert", "{garbage}", "--ingest-tls-key", "{key}"], {},
     "--ingest-tls-cert"),
    ("tls-cert-dir", ["--ingest-tls-cert", "{dir}", "--ingest-tls-key", "{key}"], {},
     "--ingest-tls-cert"),
    ("tls-key-missing", ["--ingest-tls-cert", "{cert}", "--ingest-tls-key", "{missing}"], {},
     "--ingest-tls-key"),
    ("tls-key-alone", ["--ingest-tls-key", "{key}"], {}, "--ingest-tls-key"),
    ("tls-key-mismatch", ["--ingest-tls-cert", "{cert}", "--ingest-tls-key", "{other_key}"],
     {}, "--ingest-tls-key"),
    ("http-host-space", ["--http-host", "a b"], {}, "--http-host"),
    ("http-host-empty", ["--http-host", ""], {}, "--http-host"),
    ("http-host-bad-ip", ["--http-host", "300.1.1.1"], {}, "--http-host"),
    ("http-host-unresolvable", ["--http-host", "nosuchhost.invalid"], {}, "--http-host"),
    ("http-port-range", ["--http-port", "70000"], {}, "--http-port"),
    ("http-port-negative", ["--http-port", "-1"], {}, "--http-port"),
    ("http-port-text", ["--http-port", "x"], {}, "--http-port"),
    ("http-port-fraction", ["--http-port", "8080.5"], {}, "--http-port"),
    ("bucket-zero", ["--bucket-seconds", "0"], {}, "--bucket-seconds"),
    ("bucket-negative", ["--bucket-seconds", "-1"], {}, "--bucket-seconds"),
    ("bucket-nan", ["--bucket-seconds", "nan"], {}, "--bucket-seconds"),
    ("bucket-inf", ["--bucket-seconds", "inf"], {}, "--bucket-seconds"),
    ("bucket-text", ["--bucket-seconds", "soon"], {}, "--bucket-seconds"),
    ("bucket-tiny", ["--bucket-seconds", "0.01"], {}, "--bucket-seconds"),
    ("bucket-over-window", ["--bucket-seconds", "20", "--window-seconds", "10"], {},
     "--bucket-seconds"),
    ("window-zero", ["--window-seconds", "0"], {}, "--window-seconds"),
    ("window-negative", ["--window-seconds", "-5"], {}, "--window-seconds"),
    ("window-nan", ["--window-seconds", "nan"], {}, "--window-seconds"),
    ("window-over-a-day", ["--window-seconds", "100000"], {}, "--window-seconds"),
    ("window-too-many-buckets", ["--bucket-seconds", "0.1", "--window-seconds", "86400"], {},
     "--window-seconds"),
    ("window-under-default-bucket", ["--window-seconds", "5"], {}, "--window-seconds"),
    ("lateness-negative", ["--lateness-seconds", "-1"], {}, "--lateness-seconds"),
    ("lateness-nan", ["--lateness-seconds", "nan"], {}, "--lateness-seconds"),
    ("lateness-inf", ["--lateness-seconds", "inf"], {}, "--lateness-seconds"),
    ("lateness-not-under-window", ["--window-seconds", "20", "--lateness-seconds", "20"], {},
     "--lateness-seconds"),
    ("export-zero", ["--export-interval", "0"], {}, "--export-interval"),
    ("export-negative", ["--export-interval", "-10"], {}, "--export-interval"),
    ("export-nan", ["--export-interval", "nan"], {}, "--export-interval"),
    ("export-inf", ["--export-interval", "inf"], {}, "--export-interval"),
    ("edges-zero", ["--max-edges", "0"], {}, "--max-edges"),
    ("edges-negative", ["--max-edges", "-1"], {}, "--max-edges"),
    ("edges-fraction", ["--max-edges", "1.5"], {}, "--max-edges"),
    ("edges-huge", ["--max-edges", "10000001"], {}, "--max-edges"),
    ("external-zero", ["--max-external", "0"], {}, "--max-external"),
    ("external-negative", ["--max-external", "-3"], {}, "--max-external"),
    ("external-text", ["--max-external", "many"], {}, "--max-external"),
    ("same-port", ["--http-port", "{port}", "--ingest-address", "127.0.0.1:{port}"], {},
     "--http-port"),
    ("service-graph-value", ["--service-graph=yes"], {}, "--service-graph"),
    ("no-kubernetes-value", ["--no-kubernetes=1"], {}, "--no-kubernetes"),
    ("verbose-value", ["--verbose=1"], {}, "--verbose"),
    ("unknown-flag", ["--max-egdes", "5"], {}, "--max-egdes"),
    ("abbreviated-flag", ["--bucket", "5"], {}, "--bucket"),
    ("missing-value", ["--http-port"], {}, "--http-port"),
    ("http-port-in-use", ["--http-port", "{busy}"], {}, "--http-port"),
    ("agent-account-without-tls", ["--agent-service-account", "ns/agent"], {},
     "--agent-service-account"),
    ("agent-account-without-kubernetes", ["--agent-service-account", "ns/agent",
                                          "--ingest-tls-cert", "{cert}", "--ingest-tls-key",
                                          "{key}"], {}, "--no-kubernetes"),
    ("agent-account-no-namespace", ["--agent-service-account", "agent"], {},
     "--agent-service-account"),
    ("agent-account-upper", ["--agent-service-account", "NS/Agent"], {},
     "--agent-service-account"),
    ("agent-account-username", ["--agent-service-account", "system:serviceaccount:ns:a"], {},
     "--agent-service-account"),
    ("audience-alone", ["--token-audience", "traceprobe"], {}, "--token-audience"),
    ("audience-space", ["--token-audience", "a b"], {}, "--token-audience"),
    ("audience-empty", ["--token-audience", ""], {}, "--token-audience"),
    ("ingest-port-in-use", ["--ingest-address", "127.0.0.1:{busy}"], {}, "--ingest-address"),
    # The OTLP exporter's variables (export is on once an endpoint is set).
    ("endpoint-port-range", [], {f"{E}ENDPOINT": "http://h:99999"}, f"{E}ENDPOINT"),
    ("endpoint-port-zero", [], {f"{E}ENDPOINT": "http://h:0"}, f"{E}ENDPOINT"),
    ("endpoint-port-text", [], {f"{E}ENDPOINT": "http://h:abc"}, f"{E}ENDPOINT"),
    ("endpoint-credentials", [], {f"{E}ENDPOINT": "http://user:s3cret@h:4317"},
     f"{E}ENDPOINT"),
    ("endpoint-token", [], {f"{E}ENDPOINT": "https://s3cret@h:4317"}, f"{E}ENDPOINT"),
    ("endpoint-bare-credentials", [], {f"{E}ENDPOINT": "user:s3cret@h:4317"}, f"{E}ENDPOINT"),
    ("endpoint-scheme", [], {f"{E}ENDPOINT": "ftp://h:4317"}, f"{E}ENDPOINT"),
    ("endpoint-no-host", [], {f"{E}ENDPOINT": "http://:4317"}, f"{E}ENDPOINT"),
    ("endpoint-space", [], {f"{E}ENDPOINT": "http://a b:4317"}, f"{E}ENDPOINT"),
    ("endpoint-grpc-no-port", [], {f"{E}ENDPOINT": "http://h"}, f"{E}ENDPOINT"),
    ("endpoint-grpc-path", [], {f"{E}ENDPOINT": "http://h:4317/v1/metrics"}, f"{E}ENDPOINT"),
    ("endpoint-fragment", [], {**HTTP, f"{E}ENDPOINT": "https://h:4318/#x"}, f"{E}ENDPOINT"),
    ("endpoint-bare-for-http", [], {**HTTP, f"{E}ENDPOINT": "h:4318"}, f"{E}ENDPOINT"),
    ("endpoint-bare-bad", [], {f"{E}ENDPOINT": "h:99999"}, f"{E}ENDPOINT"),
    ("metrics-endpoint-range", [], {f"{E}METRICS_ENDPOINT": "https://h:70000"},
     f"{E}METRICS_ENDPOINT"),
    ("protocol", [], {**GRPC, f"{E}PROTOCOL": "http/json"}, f"{E}PROTOCOL"),
    ("metrics-protocol", [], {**GRPC, f"{E}METRICS_PROTOCOL": "thrift"},
     f"{E}METRICS_PROTOCOL"),
    ("insecure-word", [], {**GRPC, f"{E}INSECURE": "yes"}, f"{E}INSECURE"),
    ("insecure-empty", [], {**GRPC, f"{E}INSECURE": ""}, f"{E}INSECURE"),
    ("insecure-vs-https", [], {**TLS, f"{E}INSECURE": "true"}, f"{E}INSECURE"),
    ("metrics-insecure-word", [], {**GRPC, f"{E}METRICS_INSECURE": "1"},
     f"{E}METRICS_INSECURE"),
    ("metrics-insecure-vs-http", [], {**GRPC, f"{E}METRICS_INSECURE": "false"},
     f"{E}METRICS_INSECURE"),
    ("ca-missing", [], {**TLS, f"{E}CERTIFICATE": "{missing}"}, f"{E}CERTIFICATE"),
    ("ca-garbage", [], {**TLS, f"{E}CERTIFICATE": "{garbage}"}, f"{E}CERTIFICATE"),
    ("ca-not-pem", [], {**TLS, f"{E}CERTIFICATE": "{text}"}, f"{E}CERTIFICATE"),
    ("ca-plaintext", [], {**GRPC, f"{E}CERTIFICATE": "{ca}"}, f"{E}CERTIFICATE"),
    ("metrics-ca-missing", [], {**TLS, f"{E}METRICS_CERTIFICATE": "{missing}"},
     f"{E}METRICS_CERTIFICATE"),
    ("client-key-alone", [], {**TLS, f"{E}CERTIFICATE": "{ca}",
                              f"{E}CLIENT_KEY": "{client_key}"}, f"{E}CLIENT_KEY"),
    ("client-key-alone-http", [], {**HTTP, f"{E}CLIENT_KEY": "{client_key}"},
     f"{E}CLIENT_KEY"),
    ("metrics-client-key-without-its-ca", [], {**TLS, f"{E}METRICS_CLIENT_KEY": "{client_key}",
                                               f"{E}METRICS_CLIENT_CERTIFICATE": "{client}"},
     f"{E}METRICS_CLIENT_KEY"),
    ("client-cert-mismatch", [], {**TLS, f"{E}CERTIFICATE": "{ca}",
                                  f"{E}CLIENT_KEY": "{other_key}",
                                  f"{E}CLIENT_CERTIFICATE": "{client}"},
     f"{E}CLIENT_CERTIFICATE"),
    ("metrics-client-cert-missing", [], {**TLS, f"{E}METRICS_CERTIFICATE": "{ca}",
                                         f"{E}METRICS_CLIENT_CERTIFICATE": "{missing}"},
     f"{E}METRICS_CLIENT_CERTIFICATE"),
    ("headers-no-equals", [], {**GRPC, f"{E}HEADERS": "api-key=s3cret,broken"},
     f"{E}HEADERS"),
    ("headers-control", [], {**GRPC, f"{E}HEADERS": "api-key=s3cret%0A"}, f"{E}HEADERS"),
    ("headers-grpc-key", [], {**GRPC, f"{E}HEADERS": "Api!Key=s3cret"}, f"{E}HEADERS"),
    ("metrics-headers", [], {**GRPC, f"{E}METRICS_HEADERS": "s3cret"}, f"{E}METRICS_HEADERS"),
    ("compression-grpc-none", [], {**GRPC, f"{E}COMPRESSION": "none"}, f"{E}COMPRESSION"),
    ("compression-unknown", [], {**HTTP, f"{E}COMPRESSION": "brotli"}, f"{E}COMPRESSION"),
    ("metrics-compression", [], {**HTTP, f"{E}METRICS_COMPRESSION": "zstd"},
     f"{E}METRICS_COMPRESSION"),
    ("timeout-text", [], {**GRPC, f"{E}TIMEOUT": "abc"}, f"{E}TIMEOUT"),
    ("timeout-empty", [], {**GRPC, f"{E}TIMEOUT": ""}, f"{E}TIMEOUT"),
    ("timeout-zero", [], {**GRPC, f"{E}TIMEOUT": "0"}, f"{E}TIMEOUT"),
    ("timeout-negative", [], {**GRPC, f"{E}TIMEOUT": "-1"}, f"{E}TIMEOUT"),
    ("timeout-nan", [], {**GRPC, f"{E}TIMEOUT": "nan"}, f"{E}TIMEOUT"),
    ("timeout-huge", [], {**GRPC, f"{E}TIMEOUT": "10000"}, f"{E}TIMEOUT"),
    ("metrics-timeout-inf", [], {**GRPC, f"{E}METRICS_TIMEOUT": "inf"}, f"{E}METRICS_TIMEOUT"),
    ("temporality", [], {**GRPC, f"{E}METRICS_TEMPORALITY_PREFERENCE": "weekly"},
     f"{E}METRICS_TEMPORALITY_PREFERENCE"),
    ("histogram", [], {**GRPC, f"{E}METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "median"},
     f"{E}METRICS_DEFAULT_HISTOGRAM_AGGREGATION"),
    ("interval-zero", [], {**GRPC, "OTEL_METRIC_EXPORT_INTERVAL": "0"},
     "OTEL_METRIC_EXPORT_INTERVAL"),
    ("interval-tiny", [], {**GRPC, "OTEL_METRIC_EXPORT_INTERVAL": "50"},
     "OTEL_METRIC_EXPORT_INTERVAL"),
    ("interval-text", [], {**GRPC, "OTEL_METRIC_EXPORT_INTERVAL": "10s"},
     "OTEL_METRIC_EXPORT_INTERVAL"),
    ("export-timeout", [], {**GRPC, "OTEL_METRIC_EXPORT_TIMEOUT": "-5"},
     "OTEL_METRIC_EXPORT_TIMEOUT"),
    ("exemplar-filter", [], {**GRPC, "OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"},
     "OTEL_METRICS_EXEMPLAR_FILTER"),
    ("sdk-disabled-word", [], {**GRPC, "OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"),
    ("internal-metrics", [], {**GRPC, "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": "2"},
     "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"),
    ("resource-attributes", [], {**GRPC, "OTEL_RESOURCE_ATTRIBUTES": "team=a,stray"},
     "OTEL_RESOURCE_ATTRIBUTES"),
    ("resource-detectors", [], {**GRPC, "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "nope"},
     "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"),
    ("grpc-provider", [], {**TLS, "OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER": "x"},
     "OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER"),
    ("grpc-metrics-provider", [],
     {**TLS, "OTEL_PYTHON_EXPORTER_OTLP_GRPC_METRICS_CREDENTIAL_PROVIDER": "x"},
     "OTEL_PYTHON_EXPORTER_OTLP_GRPC_METRICS_CREDENTIAL_PROVIDER"),
    ("http-provider", [], {**HTTP, "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "x"},
     "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER"),
    ("http-metrics-provider", [],
     {**HTTP, "OTEL_PYTHON_EXPORTER_OTLP_HTTP_METRICS_CREDENTIAL_PROVIDER": "x"},
     "OTEL_PYTHON_EXPORTER_OTLP_HTTP_METRICS_CREDENTIAL_PROVIDER"),
    ("retry-codes", [], {**GRPC, "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES": "NOPE"},
     "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES"),
    ("retry-codes-http", [],
     {**HTTP, "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES": "UNAVAILABLE"},
     "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES"),
]
SECRETS = ("s3cret",)


@pytest.fixture(scope="module")
def refused(pem: dict[str, str]) -> Iterator[dict[str, tuple[int | None, str]]]:
    """Every BAD case run at once (each is its own process): id -> (status, stderr)."""
    with contextlib.ExitStack() as stack:
        busy = stack.enter_context(socket.socket())
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        values = {**pem, "busy": str(busy.getsockname()[1]), "port": str(free.getsockname()[1])}
        free.close()

        def one(case: tuple[str, list[str], dict[str, str], str]) -> tuple[int | None, str]:
            _, args, env, _ = case  # a flag given twice: the last one counts
            return run([*BASE, *(fill(a, values) for a in args)],
                       {k: fill(v, values) for k, v in env.items()})

        with ThreadPoolExecutor(8) as pool:
            yield dict(zip([c[0] for c in BAD], pool.map(one, BAD), strict=True))


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_naming_it_and_exit_2(
        case: tuple[str, list[str], dict[str, str], str],
        refused: dict[str, tuple[int | None, str]]) -> None:
    status, stderr = refused[case[0]]
    assert status == 2, f"exit {status} (None: it started):\n{stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("traceprobe-service-map: ") and case[3] in lines[0], lines[0]
    assert not any(secret in stderr for secret in SECRETS), "a secret was repeated"


def test_every_flag_and_variable_has_bad_cases() -> None:
    flags = {str(info.validation_alias.choices[0])  # type: ignore[union-attr]
             for name, info in MapSettings.model_fields.items() if name != "otlp"}
    variables = {str(info.validation_alias) for info in OtlpSettings.model_fields.values()}
    named = {c[3] for c in BAD}
    assert flags - named == set()
    assert (variables | {CLUSTER_NAME_ENV}) - named == set()
