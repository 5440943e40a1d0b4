"""Operator settings: typed, documented, read once at start from the environment."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
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

#: Namespace the agent DaemonSet lives in (normally the operator's own).
NAMESPACE_ENV = "TRACEPROBE_NAMESPACE"
#: Container image of the node agent.
AGENT_IMAGE_ENV = "TRACEPROBE_AGENT_IMAGE"
#: ServiceAccount the agent pods run as (its RBAC comes with the chart).
AGENT_SERVICE_ACCOUNT_ENV = "TRACEPROBE_AGENT_SERVICE_ACCOUNT"
#: gRPC address (host:port) of the service map's OTLP ingest; agents send edge reports there.
MAP_ENDPOINT_ENV = "TRACEPROBE_MAP_ENDPOINT"
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
            return cls.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source} is not JSON: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"at '{'.'.join(str(p) for p in e['loc']) or '(top)'}': "
                f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
            raise ValueError(f"{source} is not valid: {problems}") from None


@dataclass(frozen=True)
class OperatorSettings:
    namespace: str = "traceprobe-system"
    agent_image: str = "ghcr.io/traceprobe/agent:0.1.0"
    agent_service_account: str = "traceprobe-agent"
    agent_daemonset: str = "traceprobe-agent"
    map_endpoint: str = "traceprobe-service-map.traceprobe-system.svc:4317"
    detach_timeout_seconds: float = 60.0
    report_stale_seconds: float = 90.0
    agent_pod: AgentPodSettings = field(default_factory=AgentPodSettings)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ if environ is None else environ)
        default = cls()
        agent_pod = (AgentPodSettings.from_json(env[AGENT_POD_ENV]) if env.get(AGENT_POD_ENV)
                     else default.agent_pod)
        try:
            return cls(
                namespace=env.get(NAMESPACE_ENV, default.namespace),
                agent_image=env.get(AGENT_IMAGE_ENV, default.agent_image),
                agent_service_account=env.get(AGENT_SERVICE_ACCOUNT_ENV,
                                              default.agent_service_account),
                map_endpoint=env.get(MAP_ENDPOINT_ENV, default.map_endpoint),
                detach_timeout_seconds=float(env.get(DETACH_TIMEOUT_ENV,
                                                     default.detach_timeout_seconds)),
                report_stale_seconds=float(env.get(REPORT_STALE_ENV,
                                                   default.report_stale_seconds)),
                agent_pod=agent_pod,
            )
        except ValueError as exc:
            raise ValueError(f"{DETACH_TIMEOUT_ENV} and {REPORT_STALE_ENV} must be numbers "
                             f"of seconds: {exc}") from None
