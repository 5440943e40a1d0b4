"""Operator settings: typed, documented, read once at start from the environment.

Every variable is checked before the operator starts; a bad one is a SettingsError
whose text is the one line to print (exit status 2)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from traceprobe_api.addresses import host_port

#: Namespace the agent DaemonSet lives in (normally the operator's own).
NAMESPACE_ENV = "TRACEPROBE_NAMESPACE"
#: Container image of the node agent.
AGENT_IMAGE_ENV = "TRACEPROBE_AGENT_IMAGE"
#: ServiceAccount the agent pods run as (its RBAC comes with the chart).
AGENT_SERVICE_ACCOUNT_ENV = "TRACEPROBE_AGENT_SERVICE_ACCOUNT"
#: gRPC address (host:port) of the service map's OTLP ingest; agents send edge reports there.
MAP_ENDPOINT_ENV = "TRACEPROBE_MAP_ENDPOINT"
#: Secret (in the operator's namespace) whose `ca.crt` signed the map's ingest
#: certificate: agents then speak TLS to it. Unset: plaintext gRPC.
MAP_CA_SECRET_ENV = "TRACEPROBE_MAP_CA_SECRET"
#: Audience of the projected ServiceAccount token agents send to the map. Unset: none sent.
MAP_TOKEN_AUDIENCE_ENV = "TRACEPROBE_MAP_TOKEN_AUDIENCE"
#: Seconds a deleted probe waits for agents to report detachment before giving up.
DETACH_TIMEOUT_ENV = "TRACEPROBE_DETACH_TIMEOUT_SECONDS"
#: Seconds after which a node report without a heartbeat counts as stale.
REPORT_STALE_ENV = "TRACEPROBE_REPORT_STALE_SECONDS"
#: JSON: how agent pods run (AgentPodSettings: tolerations, priority class, resources,
#: update strategy, metrics listener, health port). The chart writes it from `agent.*`.
AGENT_POD_ENV = "TRACEPROBE_AGENT_POD"


class _Setting(BaseModel):
    """camelCase on the wire (as in the chart's values), unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _quantity_text(value: Any) -> Any:
    # YAML and --set give numbers for plain quantities (cpu: 1); Kubernetes takes both.
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


#: A Kubernetes resource quantity (100m, 256Mi, 1, 0.5, 1e3).
Quantity = Annotated[str, BeforeValidator(_quantity_text), StringConstraints(
    pattern=r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")]
#: A DNS-1123 subdomain (PriorityClass names), or empty for none.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
Port = Annotated[int, Field(ge=1, le=65535)]


class Toleration(_Setting):
    """A core/v1 Toleration, checked as the API server would."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without a key needs operator Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds applies only to effect NoExecute")
        return self


class Resources(_Setting):
    """Container requests and limits (cpu, memory, ephemeral-storage, hugepages-*)."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class UpdateStrategy(_Setting):
    max_unavailable: (Annotated[int, Field(ge=0)]
                      | Annotated[str, StringConstraints(pattern=r"^(100|[1-9]?[0-9])%$")]) = 1
    """Agent pods replaced at a time (a number, or a percentage of the nodes). No surge:
    two agents on one node would share its host ports and count its traffic twice."""

    @model_validator(mode="after")
    def _moves(self) -> UpdateStrategy:
        if self.max_unavailable in (0, "0%"):
            raise ValueError("maxUnavailable must be at least 1 (or 1%): with no surge, "
                             "0 would never replace a pod")
        return self


class AgentMetrics(_Setting):
    listen: Literal["loopback", "hostIP", "all"] = "loopback"
    """Where /metrics listens: the node's 127.0.0.1 (plain HTTP, as before); the node's IP
    (status.hostIP) or every address, both HTTPS with a bearer token that a TokenReview
    and a SubjectAccessReview (get on /metrics) must accept."""
    port: Port = 9464


class AgentPodSettings(_Setting):
    """How the agent pods run; the operator renders them into the DaemonSet."""

    tolerations: tuple[Toleration, ...] = (
        Toleration(operator="Exists", effect="NoSchedule"),
        Toleration(operator="Exists", effect="NoExecute"))
    """Every node a probe selects gets an agent, tainted (control plane included) or not."""
    priority_class_name: str = "system-node-critical"
    """The agents' PriorityClass; empty for none."""
    resources: Resources = Resources(requests={"cpu": "100m", "memory": "256Mi"},
                                     limits={"memory": "1Gi"})
    update_strategy: UpdateStrategy = UpdateStrategy()
    metrics: AgentMetrics = AgentMetrics()
    health_port: Port = 9465
    """Plain-HTTP /livez and /readyz on the node's 127.0.0.1, for the kubelet's exec probes."""
    memlock_capability: bool = False
    """Add SYS_RESOURCE, which only kernels before 5.11 need (BPF memory counted against
    RLIMIT_MEMLOCK, which BCC then raises). Newer kernels charge it to the cgroup, and
    some runtimes cannot grant SYS_RESOURCE at all (a missing bounding-set capability
    makes the container fail to start)."""

    @field_validator("priority_class_name")
    @classmethod
    def _class_name(cls, name: str) -> str:
        if name and not _NAME.match(name):
            raise ValueError(f"{name!r} is not a valid object name")
        return name

    @model_validator(mode="after")
    def _checked(self) -> AgentPodSettings:
        if self.health_port == self.metrics.port:
            raise ValueError("healthPort and metrics.port must differ (both listen on the "
                             "node's network)")
        return self

    @classmethod
    def from_json(cls, text: str, source: str = AGENT_POD_ENV) -> AgentPodSettings:
        """Parse `text`; a bad value fails naming `source` and the field."""
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:  # ValueError: also digits beyond the limit
            raise ValueError(f"{source} is not JSON ({exc}); expected a JSON object of agent "
                             "pod settings, as the chart writes it from agent.*") from None
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            problems = "; ".join(
                f"at '{'.'.join(str(p) for p in e['loc']) or '(top)'}': "
                f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
            raise ValueError(f"{source} is not valid: {problems}; expected agent pod "
                             "settings as the chart writes them from agent.*") from None


class SettingsError(ValueError):
    """A bad setting: one line naming the variable, its value and what is allowed."""


# Object names as the API server checks them.
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
# An image reference as container runtimes parse it: [registry[:port]/]path[:tag][@digest].
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY_PART = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_REGISTRY = rf"(?:{_REGISTRY_PART}(?:\.{_REGISTRY_PART})*(?::[0-9]{{1,5}})?/)"
_IMAGE = re.compile(rf"^{_REGISTRY}?{_PATH_PART}(?:/{_PATH_PART})*"
                    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"
                    r":[0-9a-fA-F]{32,})?$")


def _image(text: str) -> str:
    if len(text) > 4096 or not _IMAGE.fullmatch(text):
        raise ValueError("not an image reference")
    return text


def _host_port(text: str) -> str:
    _, port = host_port(text)  # ValueError says what is wrong
    if port == 0:
        raise ValueError("port 0 is not a port to send to")
    return text


#: Each setting's variable and what it takes, for the one-line errors.
ALLOWED = {
    "namespace": (NAMESPACE_ENV, "a namespace name (lowercase letters, digits and '-', "
                                 "at most 63 characters)"),
    "agent_image": (AGENT_IMAGE_ENV, "a container image reference such as "
                                     "ghcr.io/traceprobe/agent:0.1.0"),
    "agent_service_account": (AGENT_SERVICE_ACCOUNT_ENV,
                              "a ServiceAccount name (a DNS-1123 subdomain, at most 253 "
                              "characters)"),
    "map_endpoint": (MAP_ENDPOINT_ENV, "host:port with a port from 1 to 65535, e.g. "
                                       "traceprobe-service-map.traceprobe-system.svc:4317"),
    "map_ca_secret": (MAP_CA_SECRET_ENV, "a Secret name (a DNS-1123 subdomain) in the "
                                         "operator's namespace, holding ca.crt"),
    "map_token_audience": (MAP_TOKEN_AUDIENCE_ENV, "an audience: 1-253 printable characters, "
                                                   "no spaces, e.g. traceprobe-service-map"),
    "detach_timeout_seconds": (DETACH_TIMEOUT_ENV, "a number of seconds above 0 and at "
                                                   "most 3600"),
    "report_stale_seconds": (REPORT_STALE_ENV, "a number of seconds from 10 to 3600"),
}
_SETTING_OF = {env: name for name, (env, _) in ALLOWED.items()}


class OperatorSettings(BaseModel):
    """Everything the operator is told at start; checked before anything runs."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    namespace: Annotated[str, StringConstraints(pattern=rf"^{_LABEL}$")] = "traceprobe-system"
    """Where the agent DaemonSet lives."""
    agent_image: Annotated[str, AfterValidator(_image)] = (
        "ghcr.io/traceprobe/agent:0.1.0")
    agent_service_account: Annotated[str, StringConstraints(
        pattern=rf"^{_SUBDOMAIN}$", max_length=253)] = "traceprobe-agent"
    agent_daemonset: Annotated[str, StringConstraints(pattern=rf"^{_SUBDOMAIN}$")] = (
        "traceprobe-agent")
    map_endpoint: Annotated[str, AfterValidator(_host_port)] = (
        "traceprobe-service-map.traceprobe-system.svc:4317")
    map_ca_secret: Annotated[str, StringConstraints(
        pattern=rf"^{_SUBDOMAIN}$", max_length=253)] | None = None
    map_token_audience: Annotated[str, StringConstraints(
        pattern=r"^[\x21-\x7e]+$", max_length=253)] | None = None
    # The chart's values schema allows the same ranges.
    detach_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    report_stale_seconds: Annotated[float, Field(ge=10, le=3600)] = 90.0
    agent_pod: AgentPodSettings = Field(default_factory=AgentPodSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """The settings the environment gives (defaults for unset variables); a bad
        value raises SettingsError naming the first bad variable."""
        env = os.environ if environ is None else environ
        given: dict[str, Any] = {name: env[var] for var, name in _SETTING_OF.items()
                                 if var in env}
        if AGENT_POD_ENV in env:
            try:
                given["agent_pod"] = AgentPodSettings.from_json(env[AGENT_POD_ENV])
            except ValueError as exc:
                raise SettingsError(str(exc)) from None
        if "map_token_audience" in given and "map_ca_secret" not in given:
            raise SettingsError(f"{MAP_TOKEN_AUDIENCE_ENV}={one_line(given['map_token_audience'])}"
                                f": expected {MAP_CA_SECRET_ENV} set as well (TLS to the map): "
                                "agents' tokens must not cross the network in clear text")
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            name = str(exc.errors()[0]["loc"][0])
            var, allowed = ALLOWED[name]
            raise SettingsError(f"{var}={one_line(given[name])}: expected {allowed}") from None


def one_line(value: object, limit: int = 200) -> str:
    """`value` quoted on one line, cut at `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...'"
