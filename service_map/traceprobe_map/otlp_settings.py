"""The OTEL_* variables the map's OTLP exporter reads, checked against what the SDK does.

The SDK reads them itself when the exporter is built and meets a bad value with a
traceback, with a warning and its default, or silently (a missing CA file, a header
without '=', an INSECURE that the URL's scheme overrides). Checked here once, at
start, each names itself when wrong. Precedence is the SDK's: the METRICS variable,
then the generic one.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import grpc
from opentelemetry.sdk import environment_variables as ev
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic import model_validator as after_all

from traceprobe_api.addresses import endpoint_problem, redact

_PY = "OTEL_PYTHON_EXPORTER_OTLP_"
#: Both levels of each per-signal variable: (metrics, generic), as the SDK names them.
ENDPOINTS = (ev.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, ev.OTEL_EXPORTER_OTLP_ENDPOINT)
PROTOCOLS = (ev.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, ev.OTEL_EXPORTER_OTLP_PROTOCOL)
INSECURES = (ev.OTEL_EXPORTER_OTLP_METRICS_INSECURE, ev.OTEL_EXPORTER_OTLP_INSECURE)
CAS = (ev.OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE, ev.OTEL_EXPORTER_OTLP_CERTIFICATE)
KEYS = (ev.OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY, ev.OTEL_EXPORTER_OTLP_CLIENT_KEY)
CERTS = (ev.OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE,
         ev.OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)
HEADERS = (ev.OTEL_EXPORTER_OTLP_METRICS_HEADERS, ev.OTEL_EXPORTER_OTLP_HEADERS)
COMPRESSIONS = (ev.OTEL_EXPORTER_OTLP_METRICS_COMPRESSION, ev.OTEL_EXPORTER_OTLP_COMPRESSION)
TIMEOUTS = (ev.OTEL_EXPORTER_OTLP_METRICS_TIMEOUT, ev.OTEL_EXPORTER_OTLP_TIMEOUT)
GRPC_PROVIDERS = (f"{_PY}GRPC_METRICS_CREDENTIAL_PROVIDER", f"{_PY}GRPC_CREDENTIAL_PROVIDER")
HTTP_PROVIDERS = (f"{_PY}HTTP_METRICS_CREDENTIAL_PROVIDER", f"{_PY}HTTP_CREDENTIAL_PROVIDER")
RETRYABLE_CODES = f"{_PY}GRPC_RETRYABLE_ERROR_CODES"
#: Values never repeated in a message: they usually carry credentials.
SECRET = frozenset(HEADERS)

# The OTLP exporter spec's header format (W3C baggage without properties), with the
# Python SDK's liberal unencoded spaces in values.
_HEADER = re.compile(r"^[ \t]*([\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a"
                     r"\x7c\x7e]+)[ \t]*=[ \t]*([\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b"
                     r"\x5d-\x7e]*?)[ \t]*$")
_GRPC_KEY = re.compile(r"^[0-9a-z_.-]+$")  # gRPC metadata keys
_STATUS_CODES = [code.name for code in grpc.StatusCode]


def _boolean(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("must be true or false")


def _file(file: Path) -> Path:
    if not file.is_file():
        raise ValueError("no such file" if not file.exists() else "not a regular file")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError("not a PEM file (no -----BEGIN line)")
    return file


def _header(item: str) -> str | None:
    if not (match := _HEADER.match(item)):  # the text may be a credential: not repeated
        name = f"{item.partition('=')[0].strip()[:40]!r}" if "=" in item else "an entry"
        return (f"{name} is not name=value (a name of token characters; a %-encoded "
                "value without , ; \" or \\)")
    if any(not 32 <= ord(c) < 127 for c in unquote(match[2])):
        return f"the value of {match[1]!r} is not printable ASCII once %-decoded"
    return None


def _key_value(item: str) -> str | None:
    return None if item.partition("=")[0].strip() and "=" in item else (
        f"{item[:40]!r} is not key=value")


def _status_code(code: str) -> str | None:
    return None if code.upper() in _STATUS_CODES else f"{code!r} is not a gRPC status code"


def _entry_point(group: str, *, star: bool = False) -> Callable[[str], str | None]:
    def problem(name: str) -> str | None:
        names = set(entry_points(group=group).names) | ({"*"} if star else set())
        return None if name in names else (
            f"{name!r} is not an installed {group} entry point "
            f"(installed: {', '.join(sorted(names)) or 'none'})")
    return problem


def _items(problem: Callable[[str], str | None], sep: str = r"[ \t]*,[ \t]*") -> Any:
    """A validator of comma-separated items: the first bad one's problem is the error."""
    def check(text: str | None) -> str | None:
        for item in re.split(sep, text or ""):
            if item.strip() and (found := problem(item.strip())):
                raise ValueError(found)
        return text
    return AfterValidator(check)


def _var(name: str) -> Any:
    return Field(None, validation_alias=name)


def _case(fold: Callable[[str], str]) -> Any:
    return BeforeValidator(lambda v: fold(v.strip()) if isinstance(v, str) else v)


Bool = Annotated[bool | None, BeforeValidator(_boolean)]
_Empty = BeforeValidator(lambda v: None if v == "" else v)
Text = Annotated[str | None, _Empty]
File = Annotated[Path | None, _Empty, AfterValidator(lambda p: p and _file(p))]
Headers = Annotated[str | None, _items(_header)]
# The Python SDK reads these in seconds (the specification says milliseconds).
Timeout = Annotated[float | None, Field(gt=0, le=600, allow_inf_nan=False,
                                        json_schema_extra={"unit": "seconds"})]
Millis = Annotated[float | None, Field(gt=0, le=600_000, allow_inf_nan=False,
                                       json_schema_extra={"unit": "milliseconds"})]
# As --export-interval, in the SDK's unit.
Interval = Annotated[float | None, Field(ge=100, le=86_400_000, allow_inf_nan=False,
                                         json_schema_extra={"unit": "milliseconds"})]
Compression = Annotated[Literal["gzip", "deflate", "none"] | None, _case(str.lower)]
Protocol = Annotated[Literal["grpc", "http/protobuf"] | None, _Empty]
Providers = Annotated[str | None, _items(_entry_point("opentelemetry_otlp_credential_provider"))]


class OtlpSettings(BaseModel):
    """The exporter's variables, each as the SDK will read it (field: variable)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    metrics_endpoint: Text = _var(ENDPOINTS[0])
    endpoint: Text = _var(ENDPOINTS[1])
    metrics_protocol: Protocol = _var(PROTOCOLS[0])
    protocol_env: Protocol = _var(PROTOCOLS[1])
    metrics_insecure: Bool = _var(INSECURES[0])
    insecure: Bool = _var(INSECURES[1])
    metrics_certificate: File = _var(CAS[0])
    certificate: File = _var(CAS[1])
    metrics_client_key: File = _var(KEYS[0])
    client_key: File = _var(KEYS[1])
    metrics_client_certificate: File = _var(CERTS[0])
    client_certificate: File = _var(CERTS[1])
    metrics_headers: Headers = _var(HEADERS[0])
    headers: Headers = _var(HEADERS[1])
    metrics_compression: Compression = _var(COMPRESSIONS[0])
    compression: Compression = _var(COMPRESSIONS[1])
    metrics_timeout: Timeout = _var(TIMEOUTS[0])
    timeout: Timeout = _var(TIMEOUTS[1])
    temporality: Annotated[Literal["CUMULATIVE", "DELTA", "LOWMEMORY"] | None,
                           _case(str.upper)] = _var(
        ev.OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE)
    histogram_aggregation: Literal["explicit_bucket_histogram",
                                   "base2_exponential_bucket_histogram"] | None = _var(
        ev.OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION)
    export_interval_millis: Interval = _var(ev.OTEL_METRIC_EXPORT_INTERVAL)
    """The SDK's export interval: the map's --export-interval when that is not given."""
    export_timeout_millis: Millis = _var(ev.OTEL_METRIC_EXPORT_TIMEOUT)
    exemplar_filter: Literal["trace_based", "always_on", "always_off"] | None = _var(
        ev.OTEL_METRICS_EXEMPLAR_FILTER)
    sdk_disabled: Bool = _var(ev.OTEL_SDK_DISABLED)
    internal_metrics: Bool = _var("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED")
    resource_attributes: Annotated[str | None, _items(_key_value, ",")] = _var(
        ev.OTEL_RESOURCE_ATTRIBUTES)
    resource_detectors: Annotated[str | None, _items(_entry_point(
        "opentelemetry_resource_detector", star=True))] = _var(
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS")
    grpc_metrics_provider: Providers = _var(GRPC_PROVIDERS[0])
    grpc_provider: Providers = _var(GRPC_PROVIDERS[1])
    http_metrics_provider: Text = _var(HTTP_PROVIDERS[0])
    http_provider: Text = _var(HTTP_PROVIDERS[1])
    retryable_codes: Annotated[str | None, _items(_status_code)] = _var(RETRYABLE_CODES)

    @after_all(mode="after")
    def _consistent(self) -> OtlpSettings:
        if self.enabled and (problem := self._problem()):
            raise ValueError(problem)
        return self

    def _problem(self) -> str | None:
        protocol, (var, url), tls = self.protocol, self.target, self.tls
        if problem := endpoint_problem(url, protocol):
            return f"{var}={redact(url)!r}: {problem}"
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        insecure = self._first(INSECURES)
        if insecure and scheme and insecure[1] == (scheme == "https"):
            return (f"{insecure[0]}={str(insecure[1]).lower()} contradicts {var}'s {scheme}://"
                    " (http:// is plaintext, https:// is TLS): change one")
        named = [str(info.validation_alias) for field, info in type(self).model_fields.items()
                 if field in self.model_fields_set and getattr(self, field)]
        if protocol != "grpc" and (var := next((v for v in named if v in _GRPC_ONLY), "")):
            return f"{var} applies to OTLP/gRPC only; the protocol is {protocol}"
        if var := next((v for v in named if v in HTTP_PROVIDERS), ""):
            return (f"{var} is not used: the map sends OTLP/HTTP over its own session; "
                    "give the CA and client certificate as files instead")
        if not tls and (var := next((v for v in named if v in _TLS_ONLY), "")):
            return f"{var} applies to TLS only, and {self.target[0]} is plaintext"
        if protocol == "grpc":
            return self._grpc_problem()
        key, cert = self._first(KEYS), self._first(CERTS)
        if key and not cert:
            return f"{key[0]} needs {CERTS[1]} (or {CERTS[0]}): a key alone is not sent"
        return _pem_problem(self._first(CAS), cert, key)

    def _grpc_problem(self) -> str | None:
        if (compression := self._first(COMPRESSIONS)) and compression[1] != "gzip":
            return (f"{compression[0]}={compression[1]!r}: OTLP/gRPC here takes gzip only "
                    "(unset means none)")
        var, headers = self._first(HEADERS) or ("", "")
        for name in (item.partition("=")[0].strip() for item in headers.split(",")):
            if name and not _GRPC_KEY.match(unquote(name).lower()):
                return (f"{var}: header {name!r} is not a gRPC metadata key "
                        "(letters, digits, '-', '_', '.')")
        # The gRPC exporter reads client files only beside the CA of their own level:
        # the metrics level when its CA is set.
        level = 0 if self.metrics_certificate else 1
        ca, key, cert = (self._first((v[level],)) for v in (CAS, KEYS, CERTS))
        for other in (KEYS[1 - level], CERTS[1 - level]):
            if self._first((other,)):
                return f"{other} is not read with OTLP/gRPC " + (
                    f"while {CAS[0]} is set" if level == 0 else f"without {CAS[0]}")
        if bool(key) != bool(cert):
            return f"{KEYS[level]} and {CERTS[level]} go together"
        if key and not ca:
            return f"with OTLP/gRPC a client certificate is sent only along with {CAS[level]}"
        return _pem_problem(ca, cert, key)

    def _first(self, names: tuple[str, ...]) -> tuple[str, Any] | None:
        """(variable, value) of the first of `names` that is set."""
        fields = {str(info.validation_alias): f for f, info in type(self).model_fields.items()}
        return next(((n, v) for n in names if (v := getattr(self, fields[n])) is not None),
                    None)

    @property
    def protocol(self) -> Literal["grpc", "http/protobuf"]:
        return self.metrics_protocol or self.protocol_env or "grpc"

    @property
    def enabled(self) -> bool:
        """An endpoint is set and the SDK is not switched off."""
        return bool(self.metrics_endpoint or self.endpoint) and not self.sdk_disabled

    @property
    def target(self) -> tuple[str, str]:
        """(variable, URL or host:port) of the endpoint in use."""
        return self._first(ENDPOINTS) or (ENDPOINTS[1], "")

    @property
    def tls(self) -> bool:
        """Whether export goes over TLS, as the exporter will decide."""
        if "://" in (url := self.target[1]):
            return urlsplit(url).scheme.lower() == "https"
        return not (insecure := self._first(INSECURES)) or not insecure[1]


_GRPC_ONLY = {*GRPC_PROVIDERS, RETRYABLE_CODES}
_TLS_ONLY = {*CAS, *KEYS, *CERTS, *GRPC_PROVIDERS}


def _pem_problem(ca: tuple[str, Any] | None, cert: tuple[str, Any] | None,
                 key: tuple[str, Any] | None) -> str | None:
    """Whether the CA and the client certificate (and key) load as the exporter needs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if ca:
            context.load_verify_locations(cafile=str(ca[1]))
        if cert:
            context.load_cert_chain(str(cert[1]), str(key[1]) if key else None)
    except ssl.SSLError as exc:
        what = (f"{cert[0]}{f' and {key[0]}' if key else ''}: not a certificate and its "
                "private key" if cert else f"{ca[0]}={str(ca[1])!r}: not a CA certificate"
                if ca else "")
        return f"{what} in PEM ({exc.reason or exc.strerror or exc.args[-1]})"
    return None
