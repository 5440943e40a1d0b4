"""Fuzzing (hypothesis) the service map's settings and the kubeconfig files it reads:
any text for any flag or OTEL_* variable, any command line, any kubeconfig file ends in
settings or in the program's own one-line error, never in another exception; settings
that come out keep the window's rules."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from traceprobe_api.kubeconfig import KubeconfigError, load_api_client
from traceprobe_map.otlp_settings import ENDPOINTS, OtlpSettings
from traceprobe_map.settings import MAX_BUCKETS, MapSettings, UsageError, load

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
FIELDS = {str(info.validation_alias.choices[0]): info  # type: ignore[union-attr]
          for name, info in MapSettings.model_fields.items() if name != "otlp"}
VALUE_FLAGS = sorted(f for f, info in FIELDS.items() if info.annotation is not bool)
BOOL_FLAGS = sorted(f for f, info in FIELDS.items() if info.annotation is bool)
VARIABLES = sorted(str(info.validation_alias) for info in OtlpSettings.model_fields.values())
# Values that reach the rules behind the first checks: real files, words the SDK knows.
EXISTING = str(Path(__file__))
HINTS = st.sampled_from(["", "true", "false", "grpc", "http/protobuf", "gzip", "none", "1",
                         "0", "-1", "nan", "1e9", "a=b", "a=b,c", "x", EXISTING,
                         "/nonexistent", "http://h:4317", "https://h:4318/v1/metrics",
                         "h:4317", "[::1]:0", "UNAVAILABLE", "*"])
texts = st.text(max_size=60) | HINTS


def _loads(argv: list[str], environ: dict[str, str]) -> MapSettings | None:
    """load(), asserting it ends in settings or in one line of usage error."""
    try:
        result = load(argv, environ)
    except UsageError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message, repr(message)
        return None
    assert isinstance(result, MapSettings)
    return result


@FUZZ
@given(flag=st.sampled_from(VALUE_FLAGS), text=texts)
def test_any_text_for_any_flag_is_taken_or_refused_by_name(flag: str, text: str) -> None:
    try:
        load([f"{flag}={text}"], {})
    except UsageError as exc:
        assert flag in str(exc) or "--" in str(exc), str(exc)  # a rule names its flags


@FUZZ
@given(argv=st.lists(st.sampled_from(VALUE_FLAGS + BOOL_FLAGS) | texts, max_size=8))
def test_any_command_line_is_taken_or_refused(argv: list[str]) -> None:
    assume(not any(a in ("-h", "--help") for a in argv))  # help prints and exits 0
    _loads(argv, {})


@FUZZ
@given(variable=st.sampled_from(VARIABLES), text=texts,
       endpoint=st.sampled_from(["http://127.0.0.1:4317", "https://h:4317", "h:4317",
                                 "https://h:4318"]),
       protocol=st.sampled_from(["grpc", "http/protobuf"]))
def test_any_text_for_any_otel_variable_is_taken_or_refused_by_name(
        variable: str, text: str, endpoint: str, protocol: str) -> None:
    environ = {ENDPOINTS[1]: endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
               variable: text}
    try:
        load([], environ)
    except UsageError as exc:
        assert "OTEL_" in str(exc) and "\n" not in str(exc), str(exc)


@FUZZ
@given(st.dictionaries(st.sampled_from(VARIABLES), texts, max_size=8))
def test_any_mix_of_otel_variables_is_taken_or_refused(environ: dict[str, str]) -> None:
    result = _loads([], environ)
    if result is not None and result.otlp is not None and result.otlp.enabled:
        assert result.otlp.protocol in ("grpc", "http/protobuf")


numbers = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0.05, 100_000)


@FUZZ
@given(bucket=numbers, window=numbers, lateness=numbers)
def test_window_settings_that_load_keep_the_windows_rules(bucket: float, window: float,
                                                          lateness: float) -> None:
    result = _loads([f"--bucket-seconds={bucket!r}", f"--window-seconds={window!r}",
                     f"--lateness-seconds={lateness!r}"], {})
    if result is not None:
        assert 0 < result.bucket_seconds <= result.window_seconds
        assert 0 <= result.lateness_seconds < result.window_seconds
        assert result.window_seconds / result.bucket_seconds <= MAX_BUCKETS


KEYS = ["apiVersion", "kind", "clusters", "users", "contexts", "current-context", "name",
        "cluster", "user", "context", "server", "token", "certificate-authority",
        "insecure-skip-tls-verify", "namespace", "preferences"]  # no exec: it would run
scalars = st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=20) | st.just(
    "https://127.0.0.1:6443")
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(KEYS), inner, max_size=6), max_leaves=25)


def _load_file(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config"
        path.write_bytes(content)
        try:
            load_api_client(str(path))
        except KubeconfigError as exc:
            assert "\n" not in str(exc), str(exc)


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_as_a_kubeconfig_load_or_fail_by_name(content: bytes) -> None:
    _load_file(content)


@FUZZ
@given(documents)
def test_any_yaml_document_as_a_kubeconfig_loads_or_fails_by_name(document: Any) -> None:
    _load_file(yaml.safe_dump(document).encode())
