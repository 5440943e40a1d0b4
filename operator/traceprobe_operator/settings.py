"""Operator settings: typed, documented, read once at start from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

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


@dataclass(frozen=True)
class OperatorSettings:
    namespace: str = "traceprobe-system"
    agent_image: str = "ghcr.io/traceprobe/agent:0.1.0"
    agent_service_account: str = "traceprobe-agent"
    agent_daemonset: str = "traceprobe-agent"
    map_endpoint: str = "traceprobe-service-map.traceprobe-system.svc:4317"
    detach_timeout_seconds: float = 60.0
    report_stale_seconds: float = 90.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ if environ is None else environ)
        default = cls()
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
            )
        except ValueError as exc:
            raise ValueError(f"{DETACH_TIMEOUT_ENV} and {REPORT_STALE_ENV} must be numbers "
                             f"of seconds: {exc}") from None
