"""`python -m traceprobe_map`'s inputs, run as the real program: every flag and every
environment variable it reads refused by name when bad (one line, exit 2, no
traceback), good ones started and serving; kubeconfig files it cannot use refused by
name; an API server that does not answer retried with backoff while the map serves."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.chart import NON_DEFAULT, container, env_of, render
from harness.pki import make_ca, server_cert, sign_cert
from harness.tools import REPO
from harness.waiting import wait_until
from traceprobe_map.kube import LAST_RETRY_SECONDS, retry_delay
from traceprobe_map.otlp_settings import OtlpSettings
from traceprobe_map.settings import CLUSTER_NAME_ENV, MapSettings, UsageError, load

MAP = [sys.executable, "-m", "traceprobe_map"]
LOCAL = ["--http-host", "127.0.0.1", "--http-port", "0", "--ingest-address", "127.0.0.1:0"]
BASE = ["--no-kubernetes", *LOCAL]
E = "OTEL_EXPORTER_OTLP_"
GRPC = {f"{E}ENDPOINT": "http://127.0.0.1:4317"}
TLS = {f"{E}ENDPOINT": "https://127.0.0.1:4317"}
HTTP = {f"{E}ENDPOINT": "https://127.0.0.1:4318", f"{E}PROTOCOL": "http/protobuf"}


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything the map reads, plus `extra`."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "KUBE")) and k != CLUSTER_NAME_ENV}
    return {**keep, "HOME": "/nonexistent", "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pem")
    ca = make_ca(d, "ca")
    cert, key = server_cert(d, ca, "server")
    client, client_key = sign_cert(d, ca, "client", "client")
    other_cert, other_key = server_cert(d, make_ca(d / "other", "other"), "other")
    (d / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n"
                                   "-----END CERTIFICATE-----\n")
    (d / "plain.txt").write_text("just text\n")
    return {"ca": str(ca), "cert": str(cert), "key": str(key), "client": str(client),
            "client_key": str(client_key), "other_cert": str(other_cert),
            "other_key": str(other_key), "garbage": str(d / "garbage.pem"),
            "text": str(d / "plain.txt"), "missing": str(d / "missing.pem"), "dir": str(d)}


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


def _fill(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m[1]], text)


def _run(args: list[str], env: dict[str, str]) -> tuple[int | None, str]:
    try:
        done = subprocess.run([*MAP, *args], env=_clean_env(**env), cwd=REPO, text=True,
                              capture_output=True, timeout=30)
    except subprocess.TimeoutExpired as exc:  # it started: the value was taken
        return None, str(exc.stderr or "")
    return done.returncode, done.stderr


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
            return _run([*BASE, *(_fill(a, values) for a in args)],
                        {k: _fill(v, values) for k, v in env.items()})

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


def _kubeconfig(server: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "x",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}


KUBECONFIGS: list[tuple[str, bytes | None, str]] = [
    ("not-yaml", b"clusters: [unclosed\n", "not YAML"),
    ("a-string", b"hello world\n", "a YAML str"),
    ("a-list", b"- a\n- b\n", "a YAML list"),
    ("zero-bytes", b"", "empty"),
    ("binary", b"\x00\xff\xfe", "not UTF-8"),
    ("no-contexts", b"apiVersion: v1\nkind: Config\nclusters: []\n", "current-context"),
    ("server-not-url", yaml.safe_dump(_kubeconfig("localhost")).encode(), "not an https://"),
    ("missing", None, "no such file"),
]


@pytest.mark.parametrize(("content", "problem"), [c[1:] for c in KUBECONFIGS],
                         ids=[c[0] for c in KUBECONFIGS])
def test_an_unusable_kubeconfig_is_one_line_naming_the_file(
        tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "config"
    if content is not None:
        path.write_bytes(content)
    status, stderr = _run(LOCAL, {"KUBECONFIG": str(path)})
    assert status == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert str(path) in stderr and problem in stderr, stderr


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str]) -> Iterator[tuple[dict[str, int], list[str]]]:
    """The map running until the block ends: (its ready line's ports, its log so far)."""
    proc = subprocess.Popen([*MAP, *args], env=_clean_env(**env), cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: list[str] = []
    stderr = proc.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")),
                              daemon=True)
    reader.start()
    try:
        ready = wait_until(lambda: next((json.loads(x) for x in lines if x.startswith("{")),
                                        None) or (proc.poll() is not None and "exited"),
                           timeout=30, what="the ready line")
        assert ready != "exited", "".join(lines)
        yield ready, lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, "".join(lines)
        reader.join(timeout=5)
        assert not any("Traceback" in x for x in lines), "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return int(reply.status)


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
    with started([*BASE, *(_fill(a, pem) for a in args)],
                 {k: _fill(v, pem) for k, v in env.items()}) as (ready, _):
        assert _get(ready["httpPort"], "/healthz") == 200
        assert ready["ingestPort"] > 0


def test_an_unreachable_api_server_is_said_once_retried_with_backoff_and_the_map_serves(
        tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(_kubeconfig(f"https://127.0.0.1:{port}")))
    with started([*LOCAL, "--verbose"], {"KUBECONFIG": str(path)}) as (ready, lines):
        delays = re.compile(r"listing pods: API server still unreachable .* retrying in "
                            r"([\d.]+)s")

        def pods_retries() -> list[float]:
            found = [float(m[1]) for x in list(lines) if (m := delays.search(x))]
            return found if len(found) >= 3 else []

        seen = wait_until(pods_retries, timeout=40, what="three retries of the pod list")
        assert seen[0] < seen[1] < seen[2], seen  # doubling, jitter below a factor of 1.5
        said = [x for x in lines if "cannot reach the API server" in x]
        assert len(said) == 1 and f"https://127.0.0.1:{port}" in said[0], said
        assert "Connection refused" in said[0]
        assert _get(ready["httpPort"], "/healthz") == 200
        assert _get(ready["httpPort"], "/api/map") == 200


def test_retry_delay_doubles_up_to_its_cap_with_bounded_jitter() -> None:
    assert [retry_delay(n, lambda: 0.5) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert retry_delay(100, lambda: 0.5) == LAST_RETRY_SECONDS
    assert retry_delay(1, lambda: 0.0) == 0.75 and retry_delay(1, lambda: 1.0) == 1.25


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
    try:
        settings = load(spec["args"], env)
    except UsageError as exc:
        pytest.fail(f"the chart's arguments are refused: {exc}")
    assert settings.cluster_name == (values or {}).get("clusterName", settings.cluster_name)
