"""The CLI's settings: every flag and environment variable, typed and checked (pure).

`parse_args` turns argv and the environment into one `CliSettings` before any
request is made; bad input raises `UsageError`, whose text is the one line to print
(exit status 2): the flag or variable, the value, and what is allowed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NoReturn

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from traceprobe_cli.render import OUTPUTS as MAP_OUTPUTS
from traceprobe_cli.status import STALE_AFTER_SECONDS
from traceprobe_map import views

#: kubeconfig files, separated by ':', as kubectl reads them (the --kubeconfig flag wins).
KUBECONFIG_ENV = "KUBECONFIG"

DEFAULT_NAMESPACE = "traceprobe-system"
DEFAULT_SERVICE = "traceprobe-service-map"
STATUS_OUTPUTS = ("table", "json")

# Object names as the API server checks them: a DNS-1123 label (namespaces), a
# DNS-1035 label (Services), a DNS-1123 subdomain (custom objects such as probes).
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
Namespace = Annotated[str, StringConstraints(pattern=rf"^{_LABEL}$")]
ServiceName = Annotated[str, StringConstraints(pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")]
ProbeRef = Annotated[str, StringConstraints(pattern=rf"^({_LABEL}/)?{_SUBDOMAIN}$",
                                            max_length=64 + 253)]
# Names and paths are passed on as they are: no control characters, which no file or
# context name needs and which would break the one-line messages.
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=4096)]


@dataclass(frozen=True)
class Input:
    """How one setting is given and what it takes; both the errors and --help say it."""

    flag: str
    allowed: str
    meaning: str = ""


INPUTS: dict[str, Input] = {
    "command": Input("COMMAND", "map or status"),
    "kubeconfig": Input("--kubeconfig", "a kubeconfig file path", "kubeconfig file"),
    "kubeconfig_env": Input(KUBECONFIG_ENV, "kubeconfig file paths separated by ':'"
                            " (unset it for ~/.kube/config)"),
    "context": Input("--context", "a context name of the kubeconfig",
                     "kubeconfig context to use"),
    "namespace": Input("-n/--namespace", "a namespace name (lowercase letters, digits and"
                       " '-', at most 63)", "namespace of the service map"),
    "map_service": Input("--map-service", "a Service name (lowercase letters, digits and"
                         " '-', starting with a letter, at most 63)",
                         "Service of the service map"),
    "request_timeout": Input("--request-timeout", "seconds from 0.1 to 600",
                             "timeout of each API request"),
    "ns": Input("--ns", "namespace names (lowercase letters, digits and '-'),"
                " comma-separated or repeated", "only edges touching this namespace"),
    "probe": Input("--probe", "namespace/name of a TraceProbe or name of a"
                   " ClusterTraceProbe", "only edges this probe saw"),
    "min_rate": Input("--min-rate", "connection attempts (UDP: datagrams) per second, a "
                      "number >= 0",
                      "only edges with at least this traffic"),
    "search": Input("--search", "text of at most 512 characters, no control characters",
                    "only edges with an end whose name contains this"),
    "window": Input("--window", "a duration like 30s, 5m or 1h, from 1s to 24h",
                    "time window of the map (default: the map's own)"),
    "output": Input("-o/--output", "one of the command's outputs", "output format"),
    "watch": Input("-w/--watch", "a switch, no value", "redraw every --interval until Ctrl-C"),
    "interval": Input("--interval", "seconds from 1 to 3600, with --watch",
                      "--watch redraw period (at least 1 s: each redraw is a request to"
                      " the API server)"),
    "stale_after": Input("--stale-after", "seconds from 1 to 86400",
                         "a NodeReport heartbeat older than this is not Ready"),
}
MAP_ONLY = frozenset({"ns", "probe", "min_rate", "search", "window", "watch", "interval"})
STATUS_ONLY = frozenset({"stale_after"})


class UsageError(Exception):
    """Bad input; str() is the one line to print before exiting with status 2."""


class _Misplaced(ValueError):
    """A value that is fine alone but not with the rest (pydantic keeps it in ctx)."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        super().__init__(problem)
        self.field, self.value, self.problem = field, value, problem


def _namespaces(value: Any) -> Any:
    # `--ns a,b --ns c`: each item may list several, as the API's parameter does.
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        return [part for item in value
                for part in (item.split(",") if isinstance(item, str) else [item])]
    return value


def _duration(value: Any) -> Any:
    return views.parse_window(value) if isinstance(value, str) else value


Seconds = Annotated[float, Field(allow_inf_nan=False)]


class CliSettings(BaseModel):
    """What `traceprobe` was asked to do, checked before anything connects."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    command: Literal["map", "status"]
    kubeconfig: Text | None = None
    """--kubeconfig; None: KUBECONFIG, then ~/.kube/config (or a pod's ServiceAccount)."""
    kubeconfig_env: Text | None = None
    """The KUBECONFIG variable as found (used only without --kubeconfig)."""
    context: Text | None = None
    namespace: Namespace = DEFAULT_NAMESPACE
    map_service: ServiceName = DEFAULT_SERVICE
    request_timeout: Annotated[Seconds, Field(ge=0.1, le=600)] = 10.0
    """Seconds per API request: the whole request, so a silent server fails in time."""
    ns: Annotated[tuple[Namespace, ...], BeforeValidator(_namespaces)] = ()
    probe: ProbeRef | None = None
    min_rate: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    search: Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$",
                                             max_length=512)] = ""
    window: Annotated[Seconds, BeforeValidator(_duration), Field(ge=1, le=86400)] | None = None
    """Seconds; 1 s to a day keeps its wire form (`%g`) a plain number."""
    output: str = "table"
    watch: bool = False
    interval: Annotated[Seconds, Field(ge=1, le=3600)] = 5.0
    """Seconds between --watch redraws; at least 1 so a watch cannot flood the API server."""
    stale_after: Annotated[Seconds, Field(ge=1, le=86400)] = STALE_AFTER_SECONDS

    @field_validator("output")
    @classmethod
    def _output(cls, value: str, info: ValidationInfo) -> str:
        command = info.data.get("command", "status")
        choices = MAP_OUTPUTS if command == "map" else STATUS_OUTPUTS
        if value not in choices:
            raise _Misplaced("output", value, f"is not an output of `traceprobe {command}`;"
                                              f" expected one of: {', '.join(choices)}")
        return value

    @model_validator(mode="after")
    def _fits_the_command(self) -> CliSettings:
        given = self.model_fields_set
        for name in sorted(given & (STATUS_ONLY if self.command == "map" else MAP_ONLY)):
            if name != "watch" or self.watch:
                raise _Misplaced(name, getattr(self, name),
                                 f"is not an option of `traceprobe {self.command}`")
        if "interval" in given and not self.watch:
            raise _Misplaced("interval", self.interval, "applies only with --watch")
        return self

    @property
    def kubeconfig_source(self) -> tuple[str, str] | None:
        """(flag or variable, value) of the kubeconfig asked for; None for the default."""
        if self.kubeconfig is not None:
            return INPUTS["kubeconfig"].flag, self.kubeconfig
        if self.kubeconfig_env is not None:
            return KUBECONFIG_ENV, self.kubeconfig_env
        return None

    def query(self) -> views.MapQuery:
        """The map API's query for these filters (the server's own model)."""
        return views.MapQuery(namespaces=frozenset(self.ns), probe=self.probe,
                              min_rate=self.min_rate, search=self.search,
                              window_seconds=self.window)

    @classmethod
    def load(cls, values: Mapping[str, Any]) -> CliSettings:
        """Validated settings, or UsageError naming the first bad input."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise UsageError(_first_problem(exc)) from None


def _shown(value: object) -> str:
    text = repr(f"{value:g}" if isinstance(value, float) else str(value))
    return text if len(text) <= 80 else text[:77] + "...'"


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _Misplaced):
        return f"{INPUTS[cause.field].flag} {_shown(cause.value)} {cause.problem}"
    field = str(error["loc"][0]) if error["loc"] else ""
    spec = INPUTS.get(field, Input(field or "input", "see --help"))
    if error["type"] == "missing":
        return f"{spec.flag} is required: {spec.allowed}"
    if error["type"] == "extra_forbidden":
        return f"{field!r} is not a setting of traceprobe (see --help)"
    return f"{spec.flag} {_shown(error['input'])}: expected {spec.allowed}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _help(name: str, allowed: bool = True) -> str:
    """The meaning, what is allowed and the default: the same words as the errors."""
    spec, default = INPUTS[name], CliSettings.model_fields[name].default
    text = f"{spec.meaning}; {spec.allowed}" if allowed else spec.meaning
    if isinstance(default, float):
        return f"{text} (default {default:g})"
    return f"{text} (default {default})" if isinstance(default, str) and default else text


def _connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    # Accepted before and after the subcommand, like kubectl's global flags; the
    # subcommand's copies default to SUPPRESS so they never undo the earlier value.
    default = None if defaults else argparse.SUPPRESS
    parser.add_argument("--kubeconfig", default=default, metavar="FILE",
                        help=_help("kubeconfig", allowed=False) + f" (default: ${KUBECONFIG_ENV},"
                        " then ~/.kube/config)")
    parser.add_argument("--context", default=default, help=_help("context", allowed=False))
    parser.add_argument("-n", "--namespace", default=default, help=_help("namespace"))
    parser.add_argument("--map-service", default=default, metavar="SERVICE",
                        help=_help("map_service"))
    parser.add_argument("--request-timeout", default=default, metavar="SECONDS",
                        help=_help("request_timeout"))


def parser() -> argparse.ArgumentParser:
    main = _Parser(
        prog="traceprobe", description="The traceprobe service map and probe health.",
        epilog="The map is read through the API server's service proxy: your user needs"
               " `get` on services/proxy in the service map's namespace. Exit status: 0 done,"
               " 1 the cluster or the map could not be read, 2 bad input.")
    _connection_options(main, defaults=True)
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    map_cmd = commands.add_parser("map", help="edges of the service map, busiest first")
    _connection_options(map_cmd, defaults=False)
    map_cmd.add_argument("--ns", action="append", metavar="NAMESPACE", help=_help("ns"))
    map_cmd.add_argument("--probe", help=_help("probe"))
    map_cmd.add_argument("--min-rate", metavar="PER_SECOND", help=_help("min_rate"))
    map_cmd.add_argument("--search", help=_help("search"))
    map_cmd.add_argument("--window", metavar="DURATION", help=_help("window"))
    map_cmd.add_argument("-o", "--output", metavar="|".join(MAP_OUTPUTS),
                         help=INPUTS["output"].meaning + " (default table)")
    map_cmd.add_argument("-w", "--watch", action="store_true", default=None,
                         help=INPUTS["watch"].meaning)
    map_cmd.add_argument("--interval", metavar="SECONDS", help=_help("interval"))

    status_cmd = commands.add_parser("status", help="probes and nodes, and why not Ready")
    _connection_options(status_cmd, defaults=False)
    status_cmd.add_argument("-o", "--output", metavar="|".join(STATUS_OUTPUTS),
                            help=INPUTS["output"].meaning + " (default table)")
    status_cmd.add_argument("--stale-after", metavar="SECONDS", help=_help("stale_after"))
    return main


def parse_args(argv: Sequence[str] | None = None,
               environ: Mapping[str, str] | None = None) -> CliSettings:
    """Settings from the command line and the environment (default: this process's)."""
    env = os.environ if environ is None else environ
    values = {name: value for name, value in vars(parser().parse_args(argv)).items()
              if value is not None}
    if KUBECONFIG_ENV in env:
        values["kubeconfig_env"] = env[KUBECONFIG_ENV]
    return CliSettings.load(values)
