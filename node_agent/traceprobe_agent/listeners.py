"""The agent's listeners, opened before any program loads: /metrics and the probe
listener. A port that cannot be bound is the flag's fault, said in one line."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from traceprobe_agent.agent import Agent
from traceprobe_agent.health import Health, serve, serve_health, url
from traceprobe_agent.metrics_auth import MetricsAuth, is_loopback, self_signed_context
from traceprobe_agent.settings import AgentSettings, listen_problem

if TYPE_CHECKING:  # standalone runs without the Kubernetes client loaded
    from traceprobe_agent.kube import NodeApi

log = logging.getLogger("traceprobe.agent")


def open_listeners(settings: AgentSettings, agent: Agent, health: Health,
                   kube: NodeApi | None = None) -> None:
    """/metrics (plain on loopback; beyond it HTTPS with scrapers' tokens reviewed by
    `kube`'s API server, which only cluster mode has) and the probe listener."""
    address, port = settings.metrics_address, settings.metrics_port
    if port >= 0:
        tls, auth, scheme = None, None, "http"
        if not is_loopback(address):
            assert kube is not None, "settings allow beyond loopback in cluster mode only"
            tls, fingerprint = self_signed_context(address, agent.node)
            auth, scheme = MetricsAuth(kube), "https"
            log.info("metrics certificate (self-signed) SHA-256 %s", fingerprint)
        try:
            server = serve(agent, port, address, health=health, auth=auth, tls=tls)
        except OSError as exc:
            raise listen_problem("--metrics-port", address, port, exc) from None
        log.info("health and metrics on %s",
                 url(scheme, address, server.server_port, "/metrics"))
    if settings.health_port >= 0:
        try:
            probes = serve_health(health, settings.health_port)
        except OSError as exc:
            raise listen_problem("--health-port", "127.0.0.1", settings.health_port,
                                 exc) from None
        log.info("probes on %s", url("http", "127.0.0.1", probes.server_port, "/livez"))
