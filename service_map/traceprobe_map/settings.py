"""The service map's settings: every flag and environment variable, checked once at start.

Order: flag > environment > default. `load` raises UsageError whose text is the one
line to print before exiting with status 2: the flag or variable, the value as
given, and what is allowed.
"""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

from traceprobe_api.addresses import host_port, host_problem
from traceprobe_map.ingest_auth import DEFAULT_AUDIENCE
from traceprobe_map.otlp_settings import ENDPOINTS, SECRET, OtlpSettings

PROG = "traceprobe-service-map"
#: k8s.cluster.name on the map and its exports when --cluster-name is not given.
CLUSTER_NAME_ENV = "TRACEPROBE_CLUSTER_NAME"
#: The SDK's own export interval (milliseconds), used when --export-interval is not given.
EXPORT_INTERVAL_ENV = "OTEL_METRIC_EXPORT_INTERVAL"
# A snapshot of the whole window walks every bucket once a bucket leaves it, and memory
# is edges x buckets: past this many buckets a window costs more than it shows.
MAX_BUCKETS = 10_000


class UsageError(Exception):
    """Bad input; str() is the one line to print (exit status 2)."""

    def __init__(self, message: str) -> None:
        # Values are quoted as given: a newline in one must not break the line.
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))


def _field(default: Any, *names: str, unit: str = "", hint: str = "", **limits: Any) -> Any:
    return Field(default, validation_alias=AliasChoices(*names),
                 json_schema_extra={"unit": unit, "hint": hint}, **limits)


def _address(text: str) -> str:
    host_port(text)
    return text


def _host(text: str) -> str:
    if problem := host_problem(text):
        raise ValueError(f"{problem}; use an address of this machine, or 0.0.0.0 for all")
    return text


def _readable(path: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise ValueError("no such file" if not file.exists() else "not a regular file")
    try:
        file.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    return file


def _flag_text(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


Seconds = Annotated[float, BeforeValidator(_flag_text)]
Count = Annotated[int, BeforeValidator(_flag_text)]
Pem = Annotated[Path | None, AfterValidator(lambda p: p if p is None else _readable(str(p)))]


class MapSettings(BaseModel):
    """Everything the map is told, typed and checked (field: its flag)."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)

    cluster_name: str = _field("cluster", "--cluster-name", CLUSTER_NAME_ENV, max_length=253,
                               pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
                               hint="letters, digits, '-', '_' and '.', at most 253")
    """k8s.cluster.name on the map and on exported metrics."""
    ingest_address: Annotated[str, AfterValidator(_address)] = _field(
        "0.0.0.0:4317", "--ingest-address", hint="host:port, [IPv6]:port; port 0 picks one")
    """Where agents send edge reports (OTLP/gRPC)."""
    ingest_tls_cert: Pem = _field(None, "--ingest-tls-cert")
    """PEM certificate chain: serve the ingest over TLS (with --ingest-tls-key)."""
    ingest_tls_key: Pem = _field(None, "--ingest-tls-key")
    """PEM private key of --ingest-tls-cert."""
    agent_service_account: str | None = _field(
        None, "--agent-service-account", max_length=317,
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        unit="namespace/name", hint="e.g. traceprobe-system/traceprobe-agent")
    """Accept reports only with a token of this ServiceAccount bound to a pod on a node
    (TokenReview), and take their node from it; needs TLS (--ingest-tls-cert)."""
    token_audience: str = _field(DEFAULT_AUDIENCE, "--token-audience", min_length=1,
                                 max_length=253, pattern=r"^[\x21-\x7e]+$",
                                 hint="printable, no spaces")
    """The audience agents' tokens must be issued for (with --agent-service-account)."""
    http_host: Annotated[str, AfterValidator(_host)] = _field("0.0.0.0", "--http-host")
    """Address of the map view, /api and /metrics."""
    http_port: Count = _field(8080, "--http-port", ge=0, le=65535, unit="port",
                              hint="0 picks a free one")
    """Port of the map view, /api and /metrics (read-only)."""
    bucket_seconds: Seconds = _field(10.0, "--bucket-seconds", ge=0.1, le=3600,
                                     allow_inf_nan=False, unit="seconds")
    """Length of one bucket: records are merged per bucket."""
    window_seconds: Seconds = _field(300.0, "--window-seconds", ge=1, le=86_400,
                                     allow_inf_nan=False, unit="seconds")
    """How far back the map reaches."""
    lateness_seconds: Seconds = _field(15.0, "--lateness-seconds", ge=0, le=3600,
                                       allow_inf_nan=False, unit="seconds")
    """How long a bucket waits for slower agents' records before it is finished."""
    export_interval: Seconds = _field(10.0, "--export-interval", EXPORT_INTERVAL_ENV, ge=0.1,
                                      le=86_400, allow_inf_nan=False, unit="seconds")
    """Seconds between OTLP exports (else OTEL_METRIC_EXPORT_INTERVAL, in milliseconds)."""
    service_graph: bool = _field(False, "--service-graph")
    """Also export Grafana's traces_service_graph_* metrics."""
    max_edges: Count = _field(50_000, "--max-edges", ge=1, le=10_000_000, unit="edges")
    """Edges per bucket before the rest fold into one overflow edge."""
    max_external: Count = _field(1000, "--max-external", ge=1, le=10_000_000,
                                 unit="addresses")
    """Distinct external addresses named per window before the overflow bucket."""
    no_kubernetes: bool = _field(False, "--no-kubernetes")
    """Do not watch a cluster (remote ends stay unresolved)."""
    verbose: bool = _field(False, "--verbose")
    """Debug logging."""
    otlp: OtlpSettings | None = None
    """The OTLP export variables; None when no endpoint is set (export off)."""

    @model_validator(mode="after")
    def _consistent(self) -> MapSettings:
        given = self.model_fields_set

        def show(field: str) -> str:
            value = getattr(self, field)
            text = f"{value:g}" if isinstance(value, float) else str(value)
            return f"--{field.replace('_', '-')}={text}" + ("" if field in given else
                                                            " (the default)")

        if bool(self.ingest_tls_cert) != bool(self.ingest_tls_key):
            raise ValueError("--ingest-tls-cert and --ingest-tls-key go together")
        if self.agent_service_account is not None:
            if not self.ingest_tls_cert:
                raise ValueError("--agent-service-account needs --ingest-tls-cert and "
                                 "--ingest-tls-key: agents' tokens must not cross the network "
                                 "in clear text")
            if self.no_kubernetes:
                raise ValueError("--agent-service-account needs the API server to check "
                                 "tokens; drop --no-kubernetes")
        elif "token_audience" in given:
            raise ValueError("--token-audience applies with --agent-service-account only")
        if self.bucket_seconds > self.window_seconds:
            raise ValueError(f"{show('bucket_seconds')} must be at most "
                             f"{show('window_seconds')}: a window holds whole buckets")
        if self.window_seconds / self.bucket_seconds > MAX_BUCKETS:
            raise ValueError(f"{show('window_seconds')} over {show('bucket_seconds')} is "
                             f"more than {MAX_BUCKETS} buckets: raise --bucket-seconds")
        if self.lateness_seconds >= self.window_seconds:
            raise ValueError(f"{show('lateness_seconds')} must be less than "
                             f"{show('window_seconds')}: a bucket would be finished only "
                             "after it had left the window")
        if self.ingest_tls_cert and self.ingest_tls_key:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                    self.ingest_tls_cert, self.ingest_tls_key)
            except ssl.SSLError as exc:
                raise ValueError(f"--ingest-tls-cert={str(self.ingest_tls_cert)!r} and "
                                 f"--ingest-tls-key={str(self.ingest_tls_key)!r}: not a "
                                 "PEM certificate and its private key "
                                 f"({exc.reason or exc.args[-1]})") from None
        ingest_host, ingest_port = host_port(self.ingest_address)
        overlap = {ingest_host, self.http_host} & {"0.0.0.0", "::"} or (
            ingest_host == self.http_host)
        if ingest_port == self.http_port != 0 and overlap:
            raise ValueError(f"{show('ingest_address')} and {show('http_port')} use the "
                             "same port")
        return self


def parser() -> argparse.ArgumentParser:
    """The flags, each as text: MapSettings parses and checks every value."""
    p = _Parser(prog=PROG, allow_abbrev=False, argument_default=argparse.SUPPRESS,
                description="The service map: merges agents' edge reports into a map, "
                            "serves it, and exports it over OTLP when "
                            f"{ENDPOINTS[1]} is set (see the OTEL_* variables).")
    for name, info in MapSettings.model_fields.items():
        if not isinstance(info.validation_alias, AliasChoices):
            continue
        flag = str(info.validation_alias.choices[0])
        doc = (info.description or "").rstrip(".")
        if info.annotation is bool:
            p.add_argument(flag, dest=name, action="store_const", const="true", help=doc)
        else:
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            notes = [_allowed(info), "" if info.default is None else f"default {info.default}"]
            text = "; ".join(n for n in notes if n)
            p.add_argument(flag, dest=name, metavar=str(extra.get("unit") or "VALUE").upper(),
                           help=f"{doc} ({text})" if text else doc)
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse prints usage and exits: one line
        raise UsageError(f"{message} (see --help)")


def load(argv: Sequence[str] | None, environ: Mapping[str, str]) -> MapSettings:
    """Parse flags and environment; UsageError names what is wrong."""
    args = vars(parser().parse_args(argv))
    raw: dict[str, Any] = {}
    for name, value in args.items():
        raw[str(_alias(name).choices[0])] = value
    if CLUSTER_NAME_ENV in environ:
        raw[CLUSTER_NAME_ENV] = environ[CLUSTER_NAME_ENV]
    otlp = None
    if any(environ.get(var) for var in ENDPOINTS):
        try:
            otlp = OtlpSettings.model_validate(dict(environ))
        except ValidationError as exc:
            raise UsageError(_explain(exc, environ, OtlpSettings)) from None
        if otlp.export_interval_millis:  # checked there, in the SDK's unit
            raw[EXPORT_INTERVAL_ENV] = otlp.export_interval_millis / 1000
    try:
        return MapSettings.model_validate({**raw, "otlp": otlp})
    except ValidationError as exc:
        raise UsageError(_explain(exc, raw, MapSettings)) from None


def _alias(field: str) -> AliasChoices:
    alias = MapSettings.model_fields[field].validation_alias
    assert isinstance(alias, AliasChoices)
    return alias


def _allowed(info: FieldInfo) -> str:
    """What a field takes, from its type and limits: 'seconds, at least 0.1, at most 60'."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    words = [str(extra.get("unit") or "")]
    for limit in info.metadata:
        for attr, text in (("gt", "more than"), ("ge", "at least"), ("lt", "less than"),
                           ("le", "at most")):
            if (value := getattr(limit, attr, None)) is not None:
                words.append(f"{text} {_number(value)}")
    words.append(str(extra.get("hint") or ""))
    return ", ".join(w for w in words if w)


def _number(value: float) -> str:
    if float(value).is_integer():  # 10,000,000 but 65535
        return f"{value:,.0f}" if value >= 100_000 else f"{value:.0f}"
    return f"{value:g}"


def _explain(exc: ValidationError, raw: Mapping[str, Any], model: type[BaseModel]) -> str:
    """The first error as one line: source=value: what is wrong and what is allowed."""
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a rule across settings: its text names them
        return message
    source = str(error["loc"][0])
    fields = {str(a): info for info in model.model_fields.values()
              for a in (info.validation_alias.choices
                        if isinstance(info.validation_alias, AliasChoices)
                        else [info.validation_alias])}
    info = fields.get(source)
    allowed = _allowed(info) if info else ""
    kinds = {"float_parsing": "not a number", "int_parsing": "not a whole number",
             "int_from_float": "not a whole number", "finite_number": "not a finite number",
             "string_pattern_mismatch": "not a valid name", "string_too_long": "too long",
             "string_too_short": "empty"}
    if error["type"] in kinds:
        message = kinds[error["type"]]
    elif error["type"] == "literal_error":
        message = f"must be {error['ctx']['expected']}"
    elif "ctx" in error and error["type"] != "value_error":
        message = "out of range"
    value = raw.get(source, error.get("input"))
    shown = "(hidden)" if source in SECRET else repr(value)
    return f"{source}={shown}: {message}" + (f"; allowed: {allowed}" if allowed else "")
