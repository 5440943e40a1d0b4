"""The agent's settings: every flag and environment variable it reads, typed and
checked once at start, before anything loads or listens (a flag wins over its
variable, which wins over the default; an empty variable counts as unset).

Bad input is a UsageError: one line naming the flag or variable, the value, and
what is allowed; the program prints it and exits 2.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import ssl
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from traceprobe_agent.features import TRACEPOINTS
from traceprobe_agent.kernel_headers import KERNEL_SOURCE_ENV
from traceprobe_agent.metrics_auth import is_loopback
from traceprobe_agent.program import (
    BPF_DIR_ENV,
    BYTES_KPROBE_SOURCE,
    CORES,
    DNS_SOURCE,
    SOURCE,
    TRACEPOINT,
    core_sources,
)
from traceprobe_api.addresses import host_port
from traceprobe_api.probe import (
    ALL_KINDS,
    DEFAULT_KINDS,
    MAX_INTERVAL_SECONDS,
    MIN_INTERVAL_SECONDS,
)

PROG = "traceprobe-agent"
#: This node's name; the DaemonSet sets it from the pod's spec.nodeName.
NODE_NAME_ENV = "NODE_NAME"
#: host:port of the service map's OTLP/gRPC ingest (cluster mode).
MAP_ENDPOINT_ENV = "TRACEPROBE_MAP_ENDPOINT"


class UsageError(Exception):
    """Bad input, as the one line to print before exiting 2 (control characters a user
    typed, such as a newline inside an argument, are shown escaped)."""

    def __init__(self, line: str) -> None:
        super().__init__("".join(repr(c)[1:-1] if unicodedata.category(c) in _BREAKS else c
                                 for c in line))


_BREAKS = ("Cc", "Zl", "Zp")  # what str.splitlines and terminals would break lines on


class _Invalid(ValueError):
    """A validator's verdict, its message naming the value; `field` says which setting
    when a check of several settings together fails."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# Kubernetes object names (Nodes, NodeReports): a DNS-1123 subdomain.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9]([-A-Za-z0-9_]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9_]*[A-Za-z0-9])?)*\.?")
_PORT = re.compile(r"[0-9]{1,5}")


def _node_name(value: str) -> str:
    # The length first: it also bounds the regex's backtracking.
    if len(value) > 253 or not _SUBDOMAIN.fullmatch(value):
        raise _Invalid(f"{_shown(value)} is not a Kubernetes node name (lower-case letters, "
                       "digits, '-' and '.', at most 253 characters)")
    return value


def _kinds(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    kinds = frozenset(k.strip() for k in value.split(",") if k.strip())
    unknown = sorted(kinds - set(ALL_KINDS))
    if unknown or not kinds:
        what = f"unknown probe kind(s) {unknown}" if unknown else "no probe kind"
        raise _Invalid(f"{_shown(value)} names {what}; use some of {','.join(ALL_KINDS)}")
    return kinds


def _tracepoints(value: Any) -> Any:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple | set | frozenset):
        return value
    for item in items:
        if item not in TRACEPOINTS:
            raise _Invalid(f"{_shown(item)} is not a tracepoint the agent attaches; use one "
                           f"of {', '.join(sorted(TRACEPOINTS))}")
    return frozenset(items)


def _ip(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _Invalid(f"not an IP address: {_shown(value)} (use 127.0.0.1 or ::1 for "
                       "loopback, the node's IP, or 0.0.0.0 for every address)") from None


def _cgroup_path(value: str) -> str:
    parts = value.split("/")
    if (not value.startswith("/") or "\0" in value or len(value) > 4096
            or any(p in (".", "..") for p in parts)):
        raise _Invalid(f"{_shown(value)} is not an absolute cgroup v2 path without '.' or "
                       "'..' (e.g. /kubepods.slice)")
    return value


def _endpoint(value: str) -> str:
    try:
        _, port = host_port(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise _Invalid(f"{_shown(value)} is not host:port (a DNS name, an IPv4 address or an "
                       "[IPv6 address], and a port 1-65535)")
    return value


def _ca_file(value: str) -> str:
    try:
        if not Path(value).is_file():  # a FIFO or a device would block the read
            raise FileNotFoundError("not a regular file")
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=value)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; a NUL a ValueError
        raise _Invalid(f"{_shown(value)} is not a readable PEM CA bundle "
                       f"({_reason(exc)})") from None
    return value


def _token_file(value: str) -> str:
    try:
        if not Path(value).is_file():  # a FIFO or a device would block the read
            raise FileNotFoundError("not a regular file")
        token = Path(value).read_text(encoding="ascii").strip()
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Invalid(f"{_shown(value)} is not a readable token file "
                       f"({_reason(exc)})") from None
    if not token or any(c.isspace() for c in token):
        raise _Invalid(f"{_shown(value)} does not hold one token (a projected ServiceAccount "
                       "token is one line)")
    return value


def _bpf_dir(value: str) -> str:
    try:
        missing = [name for name in (*core_sources(), BYTES_KPROBE_SOURCE, DNS_SOURCE)
                   if not (Path(value) / name).is_file()
                   or not os.access(Path(value) / name, os.R_OK)]
    except ValueError:  # a NUL in the path
        missing = [SOURCE]
    if missing:
        raise _Invalid(f"{_shown(value)} is not a directory with the agent's BPF sources "
                       f"(readable {', '.join(missing)} missing)")
    return value


def _header_tree(value: str) -> str:
    # With the variable set BCC takes this one tree as both source and build tree,
    # and starts every compile with these two (Debian's split -amd64 tree alone fails).
    try:
        whole = all((Path(value) / "include" / f).is_file()
                    for f in ("linux/kconfig.h", "generated/autoconf.h"))
    except ValueError:  # a NUL in the path
        whole = False
    if not whole:
        raise _Invalid(f"{_shown(value)} is not a whole kernel header tree (BCC needs "
                       "include/linux/kconfig.h and include/generated/autoconf.h in it)")
    return value


Port = Annotated[int, Field(ge=-1, le=65535,
                            description="a port 1-65535, 0 (pick a free one) or -1 (off)")]


class AgentSettings(BaseModel):
    """What the agent runs with; `description` says what each setting allows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    standalone: bool = False
    node_name: Annotated[str, AfterValidator(_node_name)] = "localhost"
    interval_seconds: Annotated[float, Field(
        ge=MIN_INTERVAL_SECONDS, le=MAX_INTERVAL_SECONDS, allow_inf_nan=False,
        description=f"a number of seconds from {MIN_INTERVAL_SECONDS} to "
                    f"{MAX_INTERVAL_SECONDS}, as a probe's spec.interval")] = 10.0
    # Standalone only: in a cluster the probes choose kinds and limits.
    probes: Annotated[frozenset[str], BeforeValidator(_kinds)] = frozenset(DEFAULT_KINDS)
    # Below 1024 the program's maps would be sized up anyway (program.MIN_MAP_ENTRIES).
    max_connections: Annotated[int, Field(
        ge=1024, le=10_000_000, description="a whole number from 1024 to 10000000, as a "
                                            "probe's spec.limits.maxConnections")] = 65536
    metrics_address: Annotated[str, BeforeValidator(_ip)] = "127.0.0.1"
    metrics_port: Port = 9464
    health_port: Port = -1
    disabled_tracepoints: Annotated[frozenset[str], BeforeValidator(_tracepoints)] = frozenset()
    core: Annotated[str, Field(pattern=f"^(auto|{'|'.join(CORES)})$",
                               description=f"auto or one of {', '.join(CORES)}")] = "auto"
    cgroup_root: Annotated[str, AfterValidator(_cgroup_path)] | None = None
    # Cluster mode only: standalone always prints records.
    map_endpoint: Annotated[str, AfterValidator(_endpoint)] | None = None
    map_ca_file: Annotated[str, AfterValidator(_ca_file)] | None = None
    map_token_file: Annotated[str, AfterValidator(_token_file)] | None = None
    print_records: bool = False
    verbose: bool = False
    # Read again where they are used (program.bpf_source, kernel_headers); checked here.
    bpf_dir: Annotated[str, AfterValidator(_bpf_dir)] | None = None
    kernel_source: Annotated[str, AfterValidator(_header_tree)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AgentSettings:
        """Settings that make sense only together; each message leaves out the value,
        which the one line shows beside the flag."""
        given = self.model_fields_set
        if self.standalone:
            for name, why in (("map_endpoint", "--standalone prints records instead"),
                              ("map_ca_file", "--standalone sends no reports"),
                              ("map_token_file", "--standalone sends no reports"),
                              ("print_records", "--standalone always prints records")):
                if name in given:
                    raise _Invalid(f"for cluster mode only; {why}", name)
            if not is_loopback(self.metrics_address):
                raise _Invalid("beyond loopback needs the API server to check scrapers' "
                               "tokens; --standalone serves loopback only (127.0.0.1 or ::1)",
                               "metrics_address")
        else:
            for name, what in (("probes", "kinds"), ("max_connections", "limits")):
                if name in given:
                    raise _Invalid(f"applies with --standalone only; in a cluster the "
                                   f"TraceProbes choose the {what}", name)
            if "map_ca_file" in given and self.map_endpoint is None:
                raise _Invalid(f"needs --map-endpoint (or {MAP_ENDPOINT_ENV}); the CA is for "
                               "TLS to the service map", "map_ca_file")
            if "map_token_file" in given and "map_ca_file" not in given:
                raise _Invalid("needs --map-ca-file: the token must not cross the network in "
                               "clear text", "map_token_file")
        if self.disabled_tracepoints and self.core not in ("auto", TRACEPOINT):
            raise _Invalid(f"only the tracepoint core attaches tracepoints; --core is "
                           f"{self.core}", "disabled_tracepoints")
        if "metrics_address" in given and self.metrics_port == -1:
            raise _Invalid("unused while --metrics-port is -1 (off)", "metrics_address")
        if self.health_port > 0 and self.health_port == self.metrics_port:
            raise _Invalid("the same port as --metrics-port; the probe listener needs its own",
                           "health_port")
        return self


#: field -> (its flag, its environment variable); a None flag: the variable only.
SOURCES: dict[str, tuple[str | None, str | None]] = {
    "standalone": ("--standalone", None), "node_name": ("--node-name", NODE_NAME_ENV),
    "interval_seconds": ("--interval", None), "probes": ("--probes", None),
    "max_connections": ("--max-connections", None),
    "metrics_address": ("--metrics-address", None), "metrics_port": ("--metrics-port", None),
    "health_port": ("--health-port", None),
    "disabled_tracepoints": ("--disable-tracepoint", None), "core": ("--core", None),
    "cgroup_root": ("--cgroup-root", None), "map_endpoint": ("--map-endpoint", MAP_ENDPOINT_ENV),
    "map_ca_file": ("--map-ca-file", None), "map_token_file": ("--map-token-file", None),
    "print_records": ("--print-records", None),
    "verbose": ("--verbose", None), "bpf_dir": (None, BPF_DIR_ENV),
    "kernel_source": (None, KERNEL_SOURCE_ENV),
}
_HOST_NAME = f"the host name (--node-name's default; set --node-name or {NODE_NAME_ENV})"


def from_inputs(given: Mapping[str, Any], environ: Mapping[str, str] | None = None
                ) -> AgentSettings:
    """The settings from the flags given (field -> the value as typed, None when not
    given) and `environ` (default: this process's), or UsageError."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, (flag, variable) in SOURCES.items():
        if flag is not None and given.get(name) is not None:
            raw[name], sources[name] = given[name], flag
        elif variable is not None and env.get(variable):
            raw[name], sources[name] = env[variable], variable
    if "node_name" not in raw:
        # The kubelet lower-cases the host name into the Node's name the same way.
        raw["node_name"], sources["node_name"] = os.uname().nodename.lower(), _HOST_NAME
    try:
        return AgentSettings.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(_line(exc, raw, sources)) from None


def _line(exc: ValidationError, raw: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    error = exc.errors()[0]  # fields in order; one line is what the user reads
    cause = (error.get("ctx") or {}).get("error")
    name = getattr(cause, "field", None) or (str(error["loc"][0]) if error["loc"] else "")
    source = sources.get(name) or SOURCES.get(name, (None, None))[0] or name
    if isinstance(cause, _Invalid) and cause.field is None:
        return f"{source}: {cause}"  # the validator's message names the value
    if isinstance(cause, _Invalid):
        value = raw.get(name)
        return f"{source}: {cause}" if isinstance(value, bool) else (
            f"{source} {_shown(value)}: {cause}")
    field = AgentSettings.model_fields.get(name)
    allowed = field.description if field and field.description else "allowed"
    return f"{source}: {_shown(raw.get(name))} is not {allowed}"


def listen_problem(flag: str, address: str, port: int, exc: OSError) -> UsageError:
    """A listener that could not bind, as the flag to change (an address this host
    does not have is --metrics-address's fault, anything else the port's)."""
    if exc.errno == errno.EADDRNOTAVAIL and flag == "--metrics-port":
        flag = "--metrics-address"
    host = f"[{address}]" if ":" in address else address
    return UsageError(f"{flag}: cannot listen on {host}:{port} ({_reason(exc)})")
